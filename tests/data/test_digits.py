"""The "digits" builder: builds offline, a fixed stratified 1,437/360 split."""

import collections

import numpy as np

from jaxvision import data
from jaxvision.data import digits

# Pinned so that a change in scikit-learn's split algorithm cannot silently
# change the test set (and with it every reported test accuracy).
_FIRST_TEST_IDS = [21, 24, 28, 34, 35]


def _records(split: str, data_dir: str) -> list[dict]:
    source = data.load_source("digits", split, data_dir)
    return [source[i] for i in range(len(source))]


def test_builds_with_expected_split_sizes(digits_dir):
    info = data.dataset_info("digits", digits_dir)
    assert info.num_examples == {"train": 1437, "test": 360}
    assert info.num_classes == 10
    assert info.class_names == tuple("0123456789")
    assert info.image_shape == (8, 8, 1)
    assert len(data.load_source("digits", "test", digits_dir)) == 360


def test_splits_are_disjoint_and_cover_all_digits(digits_dir):
    train_ids = [int(r["id"]) for r in _records("train", digits_dir)]
    test_ids = [int(r["id"]) for r in _records("test", digits_dir)]
    assert len(set(train_ids)) == 1437 and len(set(test_ids)) == 360
    assert set(train_ids).isdisjoint(test_ids)
    assert set(train_ids) | set(test_ids) == set(range(1797))
    assert sorted(test_ids)[:5] == _FIRST_TEST_IDS


def test_records_are_the_rescaled_sklearn_digits(digits_dir):
    images, labels = digits.load_digits_uint8()
    records = _records("test", digits_dir)
    for record in records:
        assert record["image"].dtype == np.uint8
        assert record["image"].shape == (8, 8, 1)
        np.testing.assert_array_equal(record["image"], images[record["id"]])
        assert record["label"] == labels[record["id"]]
    pixels = np.stack([r["image"] for r in records])
    assert pixels.min() == 0 and pixels.max() == 255
    # sklearn pixel 8 (of 0..16) becomes round(8 * 255 / 16) = 128.
    assert set(np.unique(pixels)) <= {round(v * 255 / 16) for v in range(17)}


def test_test_split_is_stratified(digits_dir):
    _, labels = digits.load_digits_uint8()
    test_counts = collections.Counter(
        int(r["label"]) for r in _records("test", digits_dir)
    )
    assert sorted(test_counts) == list(range(10))
    for label, count in test_counts.items():
        expected = 360 * np.mean(labels == label)
        assert abs(count - expected) <= 1


def test_split_and_order_are_deterministic(digits_dir, tmp_path):
    rebuilt_dir = str(tmp_path)
    for split in ("train", "test"):
        first = [int(r["id"]) for r in _records(split, digits_dir)]
        second = [int(r["id"]) for r in _records(split, rebuilt_dir)]
        assert first == second
