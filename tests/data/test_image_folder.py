"""Tests for jaxvision.data.image_folder and the loaders' skipping of unreadable images."""

import logging
import pickle

import jax
import numpy as np
import pytest
from PIL import Image

from jaxvision import data
from jaxvision.data import image_folder
from jaxvision.data.image_folder import ImageFolderSource
from jaxvision.errors import UnreadableImage, UserError

_RNG = np.random.default_rng(0)
_PALETTE = np.array([[255, 0, 0], [0, 128, 255], [7, 8, 9]], np.uint8)  # [3, 3]


def _pixels(*shape):
    return _RNG.integers(0, 256, shape, dtype=np.uint8)


def _save(path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def modes(tmp_path):
    """ROOT/train: PNGs in modes L, RGBA and P, and the RGB each must read as."""
    root = tmp_path / "root"
    gray, rgba, index = _pixels(4, 5), _pixels(6, 3, 4), _RNG.integers(0, 3, (5, 5))
    _save(root / "train" / "cat" / "b.png", Image.fromarray(gray, "L"))
    _save(root / "train" / "cat" / "a.png", Image.fromarray(rgba, "RGBA"))
    paletted = Image.fromarray(index.astype(np.uint8), "P")
    paletted.putpalette(_PALETTE.reshape(-1).tolist())
    _save(root / "train" / "ant" / "z.png", paletted)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    expected = [_PALETTE[index], rgba[..., :3], np.repeat(gray[..., None], 3, axis=2)]
    return str(root), expected


def test_classes_are_sorted_folders_and_modes_read_as_rgb(modes):
    root, expected = modes
    source = ImageFolderSource(f"{root}/train")
    assert source.class_names == ("ant", "cat")
    assert source.files == ["ant/z.png", "cat/a.png", "cat/b.png"]
    np.testing.assert_array_equal(source.labels, [0, 1, 1])
    assert len(source) == 3 and "2 classes, 3 images" in repr(source)
    for i, want in enumerate(expected):
        record = source[i]
        assert record["image"].dtype == np.uint8 and record["image"].shape == want.shape
        np.testing.assert_array_equal(record["image"], want)
        assert record["label"].dtype == np.int32 and record["label"] == source.labels[i]
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[2]["image"], expected[2])
    with pytest.raises(IndexError):
        source[3]


def test_listing_reads_no_image(modes, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("an image was read while listing")

    monkeypatch.setattr(image_folder, "load_image", fail)
    assert len(ImageFolderSource(f"{modes[0]}/train")) == 3


def test_folder_errors_name_the_folder(modes, tmp_path):
    root, _ = modes
    (tmp_path / "root" / "val").mkdir()
    with pytest.raises(UserError, match="does not exist") as e:
        ImageFolderSource(f"{root}/test")
    assert f"{root}/test" in str(e.value) and "['train', 'val']" in str(e.value)
    with pytest.raises(UserError, match="set config.data.path to the folder") as e:
        ImageFolderSource(str(tmp_path / "nowhere" / "train"))

    flat = tmp_path / "flat"
    _save(flat / "a.png", Image.fromarray(_pixels(2, 2, 3)))
    with pytest.raises(UserError, match="no class sub-folders") as e:
        ImageFolderSource(str(flat))
    assert str(flat) in str(e.value)

    (tmp_path / "root" / "train" / "dog").mkdir()
    with pytest.raises(UserError, match="holds no images") as e:
        ImageFolderSource(f"{root}/train")
    assert f"{root}/train/dog" in str(e.value)


def test_dataset_info_and_train_classes_check(modes, tmp_path):
    root, _ = modes
    info = data.dataset_info("image_folder", root, "train")
    assert info.class_names == ("ant", "cat") and info.num_classes == 2
    assert info.image_shape is None and not info.is_detection
    assert info.num_examples == {"train": 3}

    _save(tmp_path / "root" / "val" / "ant" / "a.png", Image.fromarray(_pixels(3, 3, 3)))
    _save(tmp_path / "root" / "val" / "bee" / "a.png", Image.fromarray(_pixels(3, 3, 3)))
    with pytest.raises(UserError, match="does not have the classes") as e:
        data.load_source("image_folder", "val", root)
    assert "only in 'val': ['bee']; only in train: ['cat']" in str(e.value)
    assert f"{root}/train" in str(e.value)


@pytest.fixture
def corrupt(tmp_path):
    """ROOT/{train,val}/<class>/: 4 and 3 images, one of each a corrupt .jpg."""
    root = tmp_path / "corrupt"
    values = {}  # (split, class, name) -> the image's constant value.
    for split, files in (("train", ["a/0.png", "a/1.png", "b/0.png", "b/bad.jpg"]),
                         ("val", ["a/0.png", "a/bad.jpg", "b/0.png"])):
        for k, name in enumerate(files):
            path = root / split / name
            if name.endswith("bad.jpg"):
                path.write_bytes(_RNG.bytes(64))
                continue
            values[split, name] = 40 * k + 10
            _save(path, Image.fromarray(np.full((3, 4, 3), 40 * k + 10, np.uint8)))
    return str(root), values


def _train_batches(root, sharding, worker_count=0, num_batches=2):
    iterator = data.make_train_iterator(
        "image_folder", "train", root, global_batch_size=8, seed=0, sharding=sharding,
        decode=data.ClassificationDecode(resize_size=2), worker_count=worker_count,
    )
    batches = [jax.tree.map(np.asarray, next(iterator)) for _ in range(num_batches)]
    iterator.close()
    return batches


def test_train_skips_a_corrupt_image_with_one_warning(corrupt, sharding, caplog):
    root, _ = corrupt
    with pytest.raises(UnreadableImage, match="bad.jpg"):
        data.load_source("image_folder", "train", root)[3]
    with caplog.at_level(logging.WARNING):
        batches = _train_batches(root, sharding, num_batches=3)  # 24 reads of 4 records.
    # Record 3 (b/bad.jpg) is replaced by record 0 (a/0.png, value 10, label 0).
    values = np.concatenate([b["image"][:, 0, 0, 0] for b in batches])  # [24]
    labels = np.concatenate([b["label"] for b in batches])  # [24]
    assert sorted(set(values.tolist())) == [10, 50, 90]
    assert (values == 10).sum() == 12 and (labels == 1).sum() == 6  # 2 of 4 per epoch.
    np.testing.assert_array_equal(labels, (values == 90).astype(np.int32))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # One per file, however often it is read.
    assert f"{root}/train/b/bad.jpg" in warnings[0]
    assert "skipped 1 unreadable images so far" in warnings[0]


def test_eval_masks_a_corrupt_image(corrupt, sharding):
    root, values = corrupt
    batches = list(data.make_eval_iterator(
        "image_folder", "val", root, global_batch_size=8, sharding=sharding,
        decode=data.ClassificationDecode(resize_size=2),
    ))
    assert len(batches) == 1
    mask = np.asarray(batches[0]["mask"])
    assert mask.tolist() == [True, False, True] + [False] * 5
    np.testing.assert_array_equal(np.asarray(batches[0]["label"])[mask], [0, 1])
    np.testing.assert_array_equal(
        np.asarray(batches[0]["image"])[mask][:, 0, 0, 0],
        [values["val", "a/0.png"], values["val", "b/0.png"]],
    )


def test_every_image_unreadable_is_an_error(tmp_path, sharding):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="No record of ImageFolderSource.* is readable"):
        _train_batches(str(tmp_path), sharding, num_batches=1)


@pytest.mark.usefixtures("parsed_flags")
def test_worker_process_reads_the_same_batches(corrupt, sharding):
    root, _ = corrupt
    in_process = _train_batches(root, sharding)
    for a, b in zip(_train_batches(root, sharding, worker_count=1), in_process, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
