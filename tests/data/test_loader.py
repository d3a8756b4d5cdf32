"""grain loaders: global sharded batches, seeded order, exact resume, complete eval."""

import collections
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import PartitionSpec as P

from jaxvision import data
from jaxvision.data import decode, loader, order
from jaxvision.errors import UserError


def _train(data_dir, sharding, seed=0, batch_size=64, name="digits", **kwargs):
    """The train iterator of `name`'s "train" split (ClassificationDecode() unless given)."""
    kwargs.setdefault("decode", data.ClassificationDecode())
    return data.make_train_iterator(
        name, "train", data_dir, global_batch_size=batch_size, seed=seed,
        sharding=sharding, **kwargs,
    )


def _take(iterator, n: int) -> list[dict[str, np.ndarray]]:
    return [jax.tree.map(np.asarray, next(iterator)) for _ in range(n)]


def _keys(images: np.ndarray) -> list[bytes]:
    """One key per image; every digits image is unique, so a key names an example."""
    return [image.tobytes() for image in images]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_train_batches_are_global_static_and_sharded(digits_dir, sharding):
    iterator = _train(digits_dir, sharding)
    for _ in range(2):
        batch = next(iterator)
        assert set(batch) == {"image", "label"}
        assert (
            batch["image"].shape == (64, 8, 8, 1) and batch["image"].dtype == np.uint8
        )
        assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
        for array in batch.values():
            assert array.sharding.spec == P("data")
            assert len(array.addressable_shards) == 8
            assert array.addressable_shards[0].data.shape[0] == 8
    iterator.close()


def test_same_seed_same_order_and_different_seed_different(digits_dir, sharding):
    first = _take(_train(digits_dir, sharding, seed=3), 3)
    again = _take(_train(digits_dir, sharding, seed=3), 3)
    other = _take(_train(digits_dir, sharding, seed=4), 3)
    _assert_batches_equal(first, again)
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_every_epoch_is_a_new_permutation(digits_dir, sharding):
    num_train = 1437
    batches = _take(_train(digits_dir, sharding, batch_size=128), 23)  # > 2 epochs.
    keys = _keys(np.concatenate([b["image"] for b in batches]))
    epoch_1, epoch_2 = keys[:num_train], keys[num_train : 2 * num_train]
    assert len(set(epoch_1)) == num_train
    assert set(epoch_1) == set(epoch_2)
    assert epoch_1 != epoch_2


def test_restored_state_resumes_with_the_next_batch(digits_dir, sharding):
    iterator = _train(digits_dir, sharding)
    _take(iterator, 3)
    time.sleep(0.2)  # Let the background thread prefetch ahead of batch 3.
    state = iterator.get_state()
    expected = _take(iterator, 3)  # Batches 4, 5, 6.

    resumed = _train(digits_dir, sharding)
    resumed.set_state(state)
    resumed.start_prefetch()
    _assert_batches_equal(_take(resumed, 3), expected)

    iterator.set_state(state)  # Rewinding a running iterator works too.
    _assert_batches_equal(_take(iterator, 3), expected)
    iterator.close()
    resumed.close()


def test_state_is_the_number_of_batches_returned_and_checks_the_order(
    digits_dir, sharding
):
    iterator = _train(digits_dir, sharding, seed=5)
    _take(iterator, 2)
    state = iterator.get_state()
    iterator.close()
    assert state == {
        "next_batch": 2,
        "seed": 5,
        "global_batch_size": 64,
        "num_examples": 1437,
    }
    other_seed = _train(digits_dir, sharding, seed=6)
    with pytest.raises(UserError, match="saved with seed=5 but this run has seed=6"):
        other_seed.set_state(state)
    with pytest.raises(UserError, match="not written by this version"):
        other_seed.set_state({"sampler": "IndexSampler"})


def test_global_batches_match_the_per_process_parts(digits_dir, sharding):
    # What `make_train_iterator` yields on 1 process is what 2 processes,
    # each reading its half, assemble.
    batches = _take(_train(digits_dir, sharding, seed=1), 3)
    source = data.load_source("digits", "train", digits_dir)
    parts = [
        loader.host_train_batches(
            source, local_batch_size=32, seed=1, process_index=p, process_count=2,
            decode=data.ClassificationDecode(),
        )
        for p in range(2)
    ]
    for k, batch in enumerate(batches):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                batch[key], np.concatenate([part[k][key] for part in parts])
            )


@pytest.mark.usefixtures("parsed_flags")
def test_worker_processes_do_not_change_the_batches(digits_dir, sharding):
    iterator = _train(digits_dir, sharding, seed=2, worker_count=2)
    _take(iterator, 1)
    state = iterator.get_state()
    with_workers = _take(iterator, 3)
    iterator.close()
    in_process = _train(digits_dir, sharding, seed=2)
    in_process.set_state(state)  # A state restores with any worker_count.
    _assert_batches_equal(_take(in_process, 3), with_workers)
    in_process.close()


class _FakeSharding:
    """The rows of a batch of 64 that one process's devices hold."""

    def __init__(self, *row_ranges):
        self._rows = row_ranges

    def addressable_devices_indices_map(self, shape):
        del shape
        return {device: (slice(*r),) for device, r in enumerate(self._rows)}


def test_each_process_reads_the_rows_its_devices_hold(sharding):
    assert order.process_block(sharding, 64, 1) == 0
    assert order.process_block(_FakeSharding((48, 64), (32, 48)), 64, 2) == 1
    assert order.process_block(_FakeSharding((24, 32), (16, 24)), 64, 4) == 1
    with pytest.raises(UserError, match="not one block of 32"):
        order.process_block(_FakeSharding((0, 16), (32, 48)), 64, 2)


def test_batch_not_divisible_by_devices_is_a_user_error(digits_dir, sharding):
    with pytest.raises(UserError, match=r"config\.batch_size=12 .* 8 devices"):
        _train(digits_dir, sharding, batch_size=12)


def test_eval_yields_every_example_once_with_a_masked_last_batch(digits_dir, sharding):
    batches = list(
        data.make_eval_iterator(
            "digits", "test", digits_dir, global_batch_size=64, sharding=sharding,
            decode=data.ClassificationDecode(),
        )
    )
    assert len(batches) == 6  # ceil(360 / 64)
    for batch in batches:
        assert batch["image"].shape == (64, 8, 8, 1)
        assert batch["mask"].dtype == np.bool_ and batch["mask"].sharding.spec == P(
            "data"
        )
    assert [int(b["mask"].sum()) for b in batches] == [64] * 5 + [40]
    assert np.asarray(batches[-1]["mask"]).tolist() == [True] * 40 + [False] * 24

    seen = collections.Counter()
    for batch in batches:
        mask = np.asarray(batch["mask"])
        seen.update(
            zip(
                _keys(np.asarray(batch["image"])[mask]),
                np.asarray(batch["label"])[mask],
                strict=True,
            )
        )
    source = data.load_source("digits", "test", digits_dir)
    expected = collections.Counter(
        (source[i]["image"].tobytes(), source[i]["label"]) for i in range(len(source))
    )
    assert seen == expected


@pytest.mark.parametrize(
    "split, process_count", [("test", 2), ("test", 3), ("test[:50]", 3)]
)
def test_eval_shards_over_processes_cover_each_example_once(
    digits_dir, split, process_count
):
    source = data.load_source("digits", split, digits_dir)
    seen, num_batches = collections.Counter(), set()
    for process_index in range(process_count):
        batches = list(
            loader.host_eval_batches(
                source,
                local_batch_size=16,
                process_index=process_index,
                process_count=process_count,
                decode=data.ClassificationDecode(),
            )
        )
        num_batches.add(len(batches))
        for batch in batches:
            assert batch["image"].shape == (16, 8, 8, 1) and batch["mask"].shape == (
                16,
            )
            seen.update(_keys(batch["image"][batch["mask"]]))
    assert len(num_batches) == 1  # Every process yields the same number of batches.
    assert seen == collections.Counter(
        _keys(np.stack([source[i]["image"] for i in range(len(source))]))
    )


def test_eval_shard_pads_processes_that_get_no_examples():
    shards = [order.eval_shard(2, 4, i, 3) for i in range(3)]
    assert [s[0].tolist() for s in shards] == [[0], [1], []]
    assert [s[1] for s in shards] == [1, 1, 1]


def test_mnist_from_the_tfds_catalog_trains_end_to_end(sharding):
    with tfds.testing.mock_data(
        num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        iterator = _train(None, sharding, batch_size=16, name="mnist")
        batches = _take(iterator, 3)  # Crosses an epoch boundary (20 examples).
        iterator.close()
    for batch in batches:
        assert (
            batch["image"].shape == (16, 28, 28, 1) and batch["image"].dtype == np.uint8
        )
        assert batch["label"].dtype == np.int32
        assert ((batch["label"] >= 0) & (batch["label"] < 10)).all()


def test_variable_size_imagenet_is_resized_on_the_host(sharding):
    with tfds.testing.mock_data(
        num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        with pytest.raises(UserError, match=r"config\.data\.resize_size"):
            _train(None, sharding, batch_size=8, name="imagenet2012")
        resize = data.ClassificationDecode(resize_size=32)
        iterator = _train(None, sharding, batch_size=8, name="imagenet2012", decode=resize)
        train_batch = next(iterator)
        iterator.close()
        eval_batches = list(
            data.make_eval_iterator(
                "imagenet2012",
                "validation",
                None,
                global_batch_size=8,
                sharding=sharding,
                decode=resize,
            )
        )
    assert train_batch["image"].shape == (8, 32, 32, 3)
    assert [b["image"].shape for b in eval_batches] == [(8, 32, 32, 3)] * 2
    assert [int(b["mask"].sum()) for b in eval_batches] == [8, 2]


def test_resize_and_center_crop():
    image = np.arange(4 * 12, dtype=np.uint8).reshape(
        4, 12, 1
    )  # Shorter side already 4.
    np.testing.assert_array_equal(
        decode.resize_and_center_crop(image, 4), image[:, 4:8]
    )
    rgb = np.zeros((30, 20, 3), np.uint8)
    assert decode.resize_and_center_crop(rgb, 10).shape == (10, 10, 3)
    gray = np.full((7, 9, 1), 200, np.uint8)
    np.testing.assert_array_equal(
        decode.resize_and_center_crop(gray, 14), np.full((14, 14, 1), 200)
    )


def test_cached_source_reads_each_record_once():
    reads = []

    class Source:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            reads.append(i)
            return {"image": np.full((2, 2, 1), i, np.uint8), "label": i}

    cached = loader._CachedSource(Source())
    first = [cached[i] for i in (3, 1, 3, 3, 1)]
    assert reads == [3, 1]
    assert first[0] is first[2] and len(cached) == 5


def test_cached_train_iterator_yields_the_same_batches(digits_dir, sharding):
    plain = _train(digits_dir, sharding)
    cached = _train(digits_dir, sharding, cache=True)
    # 30 batches of 64: more than one epoch of 1,437, so cached records are reused.
    _assert_batches_equal(_take(cached, 30), _take(plain, 30))
    plain.close()
    cached.close()
