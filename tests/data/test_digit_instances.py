"""The "digit_instances" builder: views of unseen digit identities and 10-fold pairs."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxvision import data
from jaxvision.data import digit_instances as di
from jaxvision.data import digits

_VIEWS = {"train": di.NUM_TRAIN_VIEWS, "test": di.NUM_TEST_VIEWS}


@pytest.fixture(scope="module")
def instances_dir(digit_instances_dir) -> str:
    """A tfds data dir in which "digit_instances" has been prepared (tests/conftest.py)."""
    return digit_instances_dir


@pytest.fixture(scope="module")
def records(instances_dir) -> dict[str, list[dict]]:
    """Every record of both splits, in order."""
    out = {}
    for split in di.SPLITS:
        source = data.load_source("digit_instances", split, instances_dir)
        out[split] = source.__getitems__(list(range(len(source))))
    return out


@pytest.fixture(scope="module")
def view_images(records) -> np.ndarray:
    """The test split's images as float64 [360 identities, 10 views, 32 * 32]."""
    images = np.stack([r["image"] for r in records["test"]]).astype(np.float64)
    return images.reshape(360, di.NUM_TEST_VIEWS, -1)


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the rows of a and b: [N, D], [N, D] -> [N]."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_builds_with_expected_split_sizes(instances_dir):
    info = data.dataset_info("digit_instances", instances_dir)
    assert info.num_examples == {"train": 14370, "test": 3600}
    assert info.num_classes == 1437
    assert info.image_shape == (32, 32, 1)
    assert not info.is_detection
    assert len(data.load_source("digit_instances", "test", instances_dir)) == 3600


def test_records_number_identities_and_views_within_each_split(records):
    _, labels = digits.load_digits_uint8()
    for split, ids in zip(di.SPLITS, digits.split_ids(), strict=True):
        views = _VIEWS[split]
        for i, record in enumerate(records[split]):
            assert record["image"].dtype == np.uint8
            assert record["image"].shape == (32, 32, 1)
            assert record["id"] == i
            assert record["label"] == i // views and record["view"] == i % views
            assert record["instance"] == ids[record["label"]]
            assert record["digit"] == labels[record["instance"]]


def test_train_and_test_identities_are_disjoint_and_the_digits_split(records):
    train_ids, test_ids = digits.split_ids()
    train = {r["instance"] for r in records["train"]}
    test = {r["instance"] for r in records["test"]}
    assert train == set(train_ids.tolist()) and len(train) == 1437
    assert test == set(test_ids.tolist()) and len(test) == 360
    assert train.isdisjoint(test)
    assert {r["label"] for r in records["test"]} == set(range(360))


def test_records_are_the_rendered_views(records):
    images, _ = digits.load_digits_uint8()
    for split in di.SPLITS:
        for label in (0, 123, 359):
            rows = records[split][label * 10 : (label + 1) * 10]
            expected = di.render_views(images[rows[0]["instance"]], rows[0]["instance"], range(10))
            np.testing.assert_array_equal(np.stack([r["image"] for r in rows]), expected)


def test_rendering_is_deterministic_and_per_view():
    images, _ = digits.load_digits_uint8()
    first = di.render_views(images[42], 42, range(10))
    assert first.dtype == np.uint8 and first.shape == (10, 32, 32, 1)
    np.testing.assert_array_equal(first, di.render_views(images[42], 42, range(10)))
    # A view does not depend on which other views are rendered with it.
    np.testing.assert_array_equal(first[[7, 3]], di.render_views(images[42], 42, [7, 3]))
    # The same digit under another id gets other draws.
    assert not np.array_equal(first, di.render_views(images[42], 43, range(10)))


def test_views_of_one_identity_differ(view_images):
    for a in range(10):
        for b in range(a + 1, 10):
            # Mean absolute difference, in grey levels, per identity.
            difference = np.abs(view_images[:, a] - view_images[:, b]).mean(axis=-1)
            assert difference.min() > 5


def test_views_are_closer_to_their_own_identity_than_to_same_class_digits(view_images):
    _, labels = digits.load_digits_uint8()
    classes = labels[digits.split_ids()[1]]  # [360]
    # Each test identity's partner: the next identity of its class (cyclically).
    partner = np.empty(360, np.int64)
    for c in range(10):
        members = np.flatnonzero(classes == c)
        partner[members] = np.roll(members, -1)
    same, hard, easy = [], [], []
    for a, b in ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)):
        same.append(_correlation(view_images[:, a], view_images[:, b]))
        hard.append(_correlation(view_images[:, a], view_images[partner, b]))
        easy.append(_correlation(view_images[:, a], view_images[np.roll(np.arange(360), 1), b]))
    same, hard, easy = (np.concatenate(x) for x in (same, hard, easy))  # [1800] each.
    assert same.mean() > hard.mean() + 0.05  # 0.70 vs 0.61.
    assert hard.mean() > easy.mean() + 0.05  # Same-class digits are alike too.
    assert (same > hard).mean() > 0.6  # 0.69: recognizable, but not from pixels alone.


def test_pixel_correlation_does_not_solve_verification(view_images):
    """The views are hard: raw pixels verify the pairs far below a trained model's 0.95."""
    pairs = di.test_pairs()
    flat = view_images.reshape(3600, -1)
    score = _correlation(flat[pairs[:, 0]], flat[pairs[:, 1]])  # [3000]
    best = max(((score >= t) == pairs[:, 2]).mean() for t in np.unique(score))
    assert 0.6 < best < 0.8  # 0.75.


def test_pairs_follow_the_ten_fold_protocol():
    pairs = di.test_pairs()
    assert pairs.dtype == np.int32 and pairs.shape == (3000, 4)
    id_a, id_b, same, fold = pairs.T
    assert (0 <= id_a).all() and (id_a < id_b).all() and (id_b < 3600).all()
    assert len({(a, b) for a, b in zip(id_a.tolist(), id_b.tolist())}) == 3000
    np.testing.assert_array_equal(fold, np.repeat(np.arange(10), 300))
    _, labels = digits.load_digits_uint8()
    classes = labels[digits.split_ids()[1]]  # [360], by test label.
    label_a, label_b = id_a // 10, id_b // 10
    fold_of = {}
    for la, lb, f in zip(label_a.tolist(), label_b.tolist(), fold.tolist()):
        assert fold_of.setdefault(la, f) == f and fold_of.setdefault(lb, f) == f
    assert sorted(fold_of) == list(range(360))  # Every identity is in one fold.
    for f in range(10):
        in_fold = fold == f
        assert (same[in_fold] == 1).sum() == 150
        assert (same[in_fold] == (label_a[in_fold] == label_b[in_fold])).all()
        different = in_fold & (same == 0)
        same_class = classes[label_a] == classes[label_b]
        assert (different & same_class).sum() == 75  # Hard negatives.
        assert (different & ~same_class).sum() == 75
        members = [label for label, g in fold_of.items() if g == f]
        per_class = collections.Counter(classes[members].tolist())
        assert len(members) == 36 and set(per_class.values()) <= {3, 4}
        assert sorted(per_class) == list(range(10))
    # Same pairs are two different views of one identity.
    assert (id_a[same == 1] % 10 != id_b[same == 1] % 10).all()


def test_pairs_are_deterministic():
    np.testing.assert_array_equal(di.test_pairs(), di.test_pairs())


def test_pairs_round_trip_through_the_prepared_metadata(instances_dir):
    builder = tfds.builder("digit_instances", data_dir=instances_dir)
    assert builder.is_prepared()
    stored = builder.info.metadata["pairs"]["test"]
    assert isinstance(stored, list) and len(stored) == 3000
    np.testing.assert_array_equal(np.array(stored), di.test_pairs())
