"""Tests for jaxvision.data.idx_files: MNIST-style IDX files, gzipped or not."""

import gzip
import pickle
import struct

import jax
import numpy as np
import pytest

from jaxvision import data
from jaxvision.data.idx_files import IdxSource
from jaxvision.errors import UserError

_RNG = np.random.default_rng(0)


def _idx(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000_08DD, big-endian sizes, the bytes."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path, content: bytes) -> str:
    if str(path).endswith(".gz"):
        content = gzip.compress(content)
    path.write_bytes(content)
    return str(path)


@pytest.fixture
def mnist(tmp_path):
    """MNIST-named files: train gzipped (6 images 4x3), t10k plain (3 images)."""
    arrays = {
        "train": (_RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8), np.array([0, 3, 1, 3, 2, 0])),
        "test": (_RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8), np.array([4, 1, 0])),
    }
    for prefix, split, suffix in (("train", "train", ".gz"), ("t10k", "test", "")):
        images, labels = arrays[split]
        _write(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", _idx(images))
        _write(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", _idx(labels))
    (tmp_path / "README.txt").write_text("not IDX")
    return tmp_path, arrays


@pytest.mark.parametrize("split", ["train", "test"])
def test_round_trip_gzipped_or_not(mnist, split):
    directory, arrays = mnist
    source = IdxSource(str(directory), split)
    images, labels = arrays[split]
    np.testing.assert_array_equal(source.images, images)
    np.testing.assert_array_equal(source.labels, labels)
    assert len(source) == len(labels) and f"{len(labels)} images" in repr(source)
    for i in range(len(source)):
        record = source[i]
        assert record["image"].shape == (4, 3, 1) and record["image"].dtype == np.uint8
        np.testing.assert_array_equal(record["image"][..., 0], images[i])
        assert record["label"] == labels[i] and record["label"].dtype == np.int32
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[-1]["image"][..., 0], images[-1])


def test_emnist_names_and_the_same_file_gzipped_and_not(tmp_path):
    images, labels = _RNG.integers(0, 256, (2, 5, 5), dtype=np.uint8), np.array([1, 2])
    _write(tmp_path / "emnist-balanced-test-images-idx3-ubyte", _idx(images))
    _write(tmp_path / "emnist-balanced-test-images-idx3-ubyte.gz", _idx(images))
    _write(tmp_path / "emnist-balanced-test-labels-idx1-ubyte.gz", _idx(labels))
    source = IdxSource(str(tmp_path), "test")
    assert source.images_file.endswith("emnist-balanced-test-images-idx3-ubyte")
    np.testing.assert_array_equal(source.images, images)


def test_dataset_info_and_split_paths(mnist):
    directory, arrays = mnist
    info = data.dataset_info("idx", str(directory), "train")
    assert info.image_shape == (4, 3, 1) and info.num_classes == 4
    assert info.class_names == ("0", "1", "2", "3") and info.num_examples == {"train": 6}
    # A split may carry the folder: relative to the data dir, or absolute.
    source = data.load_source("idx", f"{directory.name}/test", str(directory.parent))
    np.testing.assert_array_equal(source.labels, arrays["test"][1])
    assert len(data.load_source("idx", f"{directory}/test", None)) == 3
    with pytest.raises(UserError, match=r"'valid' is not one of \['train', 'test'\]"):
        data.load_source("idx", "valid", str(directory))


def test_folder_and_file_errors_name_them(mnist, tmp_path):
    directory, _ = mnist
    with pytest.raises(UserError, match="does not exist") as e:
        IdxSource(str(tmp_path / "missing"), "train")
    assert str(tmp_path / "missing") in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images file for split 'test'") as e:
        IdxSource(str(empty), "test")
    assert "*t10k-images-idx3-ubyte[.gz] or *test-images-idx3-ubyte[.gz]" in str(e.value)
    assert "['notes.txt']" in str(e.value)

    _write(directory / "emnist-letters-train-images-idx3-ubyte.gz", b"")
    with pytest.raises(UserError, match="several images files") as e:
        IdxSource(str(directory), "train")
    assert "emnist-letters-train-images-idx3-ubyte.gz, train-images-idx3-ubyte.gz" in str(
        e.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_idx(np.zeros(3, np.uint8)), r"not an IDX file of 3-D .* 0x00000801, not 0x00000803"),
        (b"\x00\x00", r"magic number is 0x00000000"),
        (_idx(np.zeros((2, 2, 2), np.uint8))[:-1], "holds 23 bytes where its header says 24"),
        (_idx(np.zeros((2, 2, 2), np.uint8))[:9], "truncated or damaged"),
    ],
    ids=["labels-magic", "empty", "truncated", "cut-header"],
)
def test_bad_images_file_names_it(tmp_path, content, message):
    images = _write(tmp_path / "t10k-images-idx3-ubyte", content)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx(np.zeros(2, np.uint8)))
    with pytest.raises(UserError, match=message) as e:
        IdxSource(str(tmp_path), "test")
    assert images in str(e.value)


def test_bad_gzip_and_count_mismatch_name_the_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    labels = _write(tmp_path / "train-labels-idx1-ubyte", _idx(np.zeros(3, np.uint8)))
    with pytest.raises(UserError, match="Cannot read IDX file .*train-images-idx3-ubyte.gz"):
        IdxSource(str(tmp_path), "train")
    images = _write(tmp_path / "train-images-idx3-ubyte.gz", _idx(np.zeros((2, 2, 2))))
    with pytest.raises(UserError, match="holds 2 images but .* holds 3 labels") as e:
        IdxSource(str(tmp_path), "train")
    assert images in str(e.value) and labels in str(e.value)


def test_loaders_read_idx(mnist, sharding):
    directory, arrays = mnist
    iterator = data.make_train_iterator(
        "idx", "train", str(directory), global_batch_size=8, seed=0, sharding=sharding,
        decode=data.ClassificationDecode(),
    )
    batch = jax.tree.map(np.asarray, next(iterator))
    iterator.close()
    assert batch["image"].shape == (8, 4, 3, 1)
    images, labels = arrays["train"]
    for image, label in zip(batch["image"], batch["label"], strict=True):
        k = next(k for k in range(len(images)) if np.array_equal(images[k], image[..., 0]))
        assert label == labels[k]

    (batch,) = data.make_eval_iterator(
        "idx", "test", str(directory), global_batch_size=8, sharding=sharding,
        decode=data.ClassificationDecode(),
    )
    np.testing.assert_array_equal(np.asarray(batch["image"])[:3, ..., 0], arrays["test"][0])
    assert np.asarray(batch["mask"]).tolist() == [True] * 3 + [False] * 5
