"""The dataset writers (write_image_folder, write_idx, write_coco_json) read back through
their readers, the shared fixtures they make, and scripts/write_dataset.py."""

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxvision import data
from jaxvision.data.coco_json import CocoJsonSource, write_coco_json
from jaxvision.data.idx_files import IdxSource, write_idx
from jaxvision.data.image_folder import ImageFolderSource, write_image_folder
from jaxvision.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RNG = np.random.default_rng(0)


def _pixels(*shape):
    return _RNG.integers(0, 256, shape, dtype=np.uint8)


def _rgb(image):
    """How the readers return an image: grey [H, W, 1] repeated to RGB."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def test_image_folder_round_trip(tmp_path):
    # Unsorted names and a class without images ("zebra"): labels read back index the
    # sorted names written, so they are compared by name.
    names = ["dog", "zebra", "cat"]
    images = [_pixels(5, 4, 1), _pixels(3, 6, 3), _pixels(5, 4, 3), _pixels(2, 2, 1)]
    labels = [2, 0, 2, 0]
    split = tmp_path / "root" / "train"
    assert write_image_folder(str(split), iter(images), iter(labels), names) == 4
    assert sorted(os.listdir(split)) == ["cat", "dog"]  # No empty "zebra" folder.
    assert sorted(os.listdir(split / "cat")) == ["00000.png", "00002.png"]
    with Image.open(split / "cat" / "00000.png") as grey, Image.open(split / "dog" / "00001.png") as rgb:
        assert (grey.mode, rgb.mode) == ("L", "RGB")

    source = ImageFolderSource(str(split))
    assert source.class_names == ("cat", "dog")
    assert [source.class_names[label] for label in source.labels] == ["cat", "cat", "dog", "dog"]
    for i, k in enumerate([0, 2, 1, 3]):  # Class by class, each in input order.
        np.testing.assert_array_equal(source[i]["image"], _rgb(images[k]))
        assert source.class_names[source[i]["label"]] == names[labels[k]]

    for args, message in [
        ((split, images, labels, names), "is not empty"),
        ((tmp_path / "a", images, labels[:3], names), "got 3 images and labels, then only images"),
        ((tmp_path / "b", images, [0, 3, 1, 1], names), "Image 1 has label 3, outside"),
        ((tmp_path / "c", images, labels, ["a/b", "c", "d"]), "'a/b' cannot be a folder name"),
        ((tmp_path / "d", images, labels, ["a", "a", "b"]), "repeat a name"),
        ((tmp_path / "e", [np.zeros((2, 2, 3), np.float32)], [0], names), "not uint8"),
    ]:
        with pytest.raises(UserError, match=message):
            write_image_folder(str(args[0]), *args[1:])


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_and_bytes(tmp_path, compress):
    train, test = _pixels(6, 4, 3, 1), _pixels(3, 4, 3)  # [N, H, W, 1] and [N, H, W]
    train_labels, test_labels = np.array([0, 9, 1, 255, 2, 0]), np.array([4, 1, 0])
    suffix = ".gz" if compress else ""
    paths = write_idx(str(tmp_path), "train", train, train_labels, gzip=compress)
    assert paths == (str(tmp_path / f"train-images-idx3-ubyte{suffix}"),
                     str(tmp_path / f"train-labels-idx1-ubyte{suffix}"))
    write_idx(str(tmp_path), "test", list(test), list(test_labels), gzip=compress)
    assert sorted(os.listdir(tmp_path)) == sorted(
        f"{p}-{k}{suffix}" for p in ("train", "t10k") for k in ("images-idx3-ubyte",
                                                                 "labels-idx1-ubyte"))

    # The bytes, checked by hand rather than by the reader: MNIST's header, then the values.
    read = gzip.open if compress else open
    with read(paths[0], "rb") as f:
        assert f.read() == struct.pack(">4I", 0x803, 6, 4, 3) + train.tobytes()
    with read(paths[1], "rb") as f:
        assert f.read() == struct.pack(">2I", 0x801, 6) + bytes([0, 9, 1, 255, 2, 0])

    for split, images, labels in (("train", train[..., 0], train_labels),
                                  ("test", test, test_labels)):
        source = IdxSource(str(tmp_path), split)
        np.testing.assert_array_equal(source.images, images)
        np.testing.assert_array_equal(source.labels, labels)


def test_idx_refuses_what_it_cannot_write_or_read_back(tmp_path):
    images, labels = _pixels(2, 4, 4), np.array([0, 1])
    for args, message in [
        (("val", images, labels), r"'val' is not one of \['train', 'test'\]"),
        (("train", [_pixels(4, 4), _pixels(4, 5)], labels), "images of one size, and these have 2"),
        (("train", _pixels(2, 4, 4, 3), labels), "must be uint8 .* not uint8 \\[2, 4, 4, 3\\]"),
        (("train", images.astype(np.int32), labels), "must be uint8 .* not int32"),
        (("train", images, np.array([0, 256])), "labels must be 2 integers in \\[0, 255\\]"),
        (("train", images, labels[:1]), "labels must be 2 integers"),
    ]:
        with pytest.raises(UserError, match=message):
            write_idx(str(tmp_path), *args)
    # A gzipped copy beside the uncompressed one would not be the one read.
    write_idx(str(tmp_path), "test", images, labels, gzip=True)
    with pytest.raises(UserError, match="already holds t10k-images-idx3-ubyte.gz, t10k-lab"):
        write_idx(str(tmp_path), "test", images, labels)


def _record(image_id, image, yxyx, labels, crowd=None):
    objects = {"bbox": [np.float32(b) for b in yxyx], "label": [np.int64(k) for k in labels]}
    if crowd is not None:
        objects["is_crowd"] = crowd
    return {"image": image, "image/id": image_id, "objects": objects}


def test_coco_json_round_trip_with_sparse_category_ids(tmp_path):
    boxes = _RNG.uniform(0, 0.5, (3, 4)) + [0, 0, 0.5, 0.5]  # [3, 4] yxyx, max > min
    records = [
        _record(12, _pixels(20, 30, 3), boxes[:2], [2, 0], [False, True]),
        _record(4, _pixels(10, 16, 1), boxes[2:], [1]),  # Grey; no "is_crowd".
        _record(7, _pixels(8, 8, 3), np.zeros((0, 4)), []),  # No objects.
    ]
    annotations, images = str(tmp_path / "annotations" / "train.json"), str(tmp_path / "train")
    count = write_coco_json(annotations, images, iter(records), ["a", "b", "c"], [3, 5, 90])
    assert count == 3 and sorted(os.listdir(images)) == ["000004.png", "000007.png", "000012.png"]

    source = CocoJsonSource(annotations, images)
    assert source.category_ids == (3, 5, 90) and source.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(source.image_ids, [4, 7, 12])
    for i, want in zip([2, 0, 1], records, strict=True):  # Read back in id order.
        got = source[i]
        assert got["image/id"] == want["image/id"]
        np.testing.assert_array_equal(got["image"], _rgb(want["image"]))
        height, width = want["image"].shape[:2]
        # The JSON holds pixels rounded to 0.01.
        np.testing.assert_allclose(got["objects"]["bbox"], np.reshape(want["objects"]["bbox"], (-1, 4)),
                                   atol=0.005 / min(height, width) + 1e-6)
        np.testing.assert_array_equal(got["objects"]["label"], want["objects"]["label"])
        crowd = want["objects"].get("is_crowd", [False] * len(want["objects"]["label"]))
        np.testing.assert_array_equal(got["objects"]["is_crowd"], crowd)
    assert data.dataset_info("coco_json", None, f"{annotations}::{images}").category_ids == (3, 5, 90)

    for args, message in [
        (([records[0], records[0]], ["a", "b", "c"], None), "Two records have image id 12"),
        ((records, ["a", "b", "c"], [1, 2]), r"category_ids \[1, 2\] are not 3 distinct ids"),
        ((records, ["a", "b"], None), r"label\(s\) \[0, 2\] outside \[0, 2\)"),
    ]:
        with pytest.raises(UserError, match=message):
            write_coco_json(str(tmp_path / "bad.json"), str(tmp_path / "bad"), *args)


def test_digits_fixtures_hold_the_dataset(digits_dir, digits_image_folder, digits_idx_dir):
    for split, count in (("train", 1437), ("test", 360)):
        digits = data.load_source("digits", split, digits_dir)
        folder = data.load_source("image_folder", split, digits_image_folder)
        idx = data.load_source("idx", split, digits_idx_dir)
        assert len(folder) == len(idx) == count
        assert folder.class_names == tuple(str(k) for k in range(10))
        np.testing.assert_array_equal(idx.labels, [digits[i]["label"] for i in range(count)])
        np.testing.assert_array_equal(folder.labels, np.sort(idx.labels))  # Class by class.
        for i in (0, count - 1):
            np.testing.assert_array_equal(idx[i]["image"], digits[i]["image"])
            name = folder.files[i]  # "<label>/<index in the split>.png"
            index = int(os.path.splitext(os.path.basename(name))[0])
            np.testing.assert_array_equal(folder[i]["image"], _rgb(digits[index]["image"]))
            assert folder[i]["label"] == digits[index]["label"] == int(os.path.dirname(name))


def test_digit_detection_coco_json_fixture(digit_detection_dir, digit_detection_coco_json):
    paths = digit_detection_coco_json
    for key, split, count in (("train", "train", 64), ("eval", "test", 32)):
        source = CocoJsonSource(paths[f"{key}_annotations"], paths[f"{key}_images"])
        original = data.load_source("digit_detection", split, digit_detection_dir)
        assert len(source) == count and source.category_ids == tuple(range(3, 23, 2))
        for i in (0, count - 1):
            got, want = source[i], original[i]
            assert got["image/id"] == want["image/id"] == i
            np.testing.assert_array_equal(got["image"], _rgb(want["image"]))
            # Boxes times 128 are whole pixels: exact after the JSON's rounding.
            np.testing.assert_array_equal(got["objects"]["bbox"], np.stack(want["objects"]["bbox"]))
            np.testing.assert_array_equal(got["objects"]["label"], want["objects"]["label"])


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "scripts", "write_dataset.py"), *args],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def test_script_writes_digits_as_idx_and_a_bad_format_is_one_error_line(tmp_path):
    out = tmp_path / "idx"
    # Side by side: each run spends most of its time importing.
    good = _start("--dataset", "digits", "--format", "idx", "--out", str(out),
                  "--data_dir", str(tmp_path / "tfds"))  # Prepares digits there, offline.
    bad = _start("--dataset", "digits", "--format", "tfrecord", "--out", str(tmp_path / "x"))
    (_, good_stderr), (_, bad_stderr) = good.communicate(timeout=300), bad.communicate(timeout=300)

    assert good.returncode == 0, good_stderr
    # One log line per split (tfds itself prints to stdout while it prepares digits).
    assert "Wrote 1437 train images of digits" in good_stderr
    assert f"Wrote 360 test images of digits to {out}/t10k-images-idx3-ubyte." in good_stderr
    assert sorted(os.listdir(out)) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                       "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    assert len(IdxSource(str(out), "train")) == 1437 and len(IdxSource(str(out), "test")) == 360

    assert bad.returncode == 1 and "Traceback" not in bad_stderr, bad_stderr
    error_lines = [line for line in bad_stderr.split("\n") if line.startswith("error: ")]
    assert len(error_lines) == 1, bad_stderr
    assert "--format=tfrecord: value should be one of <image_folder|idx|coco_json>" in error_lines[0]
    assert not (tmp_path / "x").exists()
