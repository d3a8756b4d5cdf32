"""The global training order and its split over processes, without multi-process JAX."""

import numpy as np
import pytest

from jaxvision.data import decode, loader, order

_NUM_EXAMPLES = 50
_GLOBAL_BATCH = 8  # 50 / 8: global batches 6, 12, 18 straddle epoch boundaries.
_STEPS = 20  # > 3 epochs.


class _RecordingSource:
    """Example i has a constant image of value i; remembers which indices were read."""

    def __init__(self, num_examples: int):
        self._num_examples = num_examples
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self._num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        self.reads.append(index)
        return {
            "image": np.full((2, 2, 1), index, np.uint8),
            "label": np.int64(index % 10),
        }


def _order(seed: int, steps: int = _STEPS) -> np.ndarray:
    """The global order: example indices at positions 0 .. steps * batch - 1."""
    shard = order.TrainOrder(_NUM_EXAMPLES, _GLOBAL_BATCH, seed, 0, 1)
    return np.concatenate([shard[k] for k in range(steps)])  # [steps * B]


def test_same_seed_same_order_and_different_seed_different():
    np.testing.assert_array_equal(_order(0), _order(0))
    assert not np.array_equal(_order(0), _order(1))


def test_every_epoch_is_a_new_permutation_of_all_examples():
    order = _order(3)
    epochs = order[: 3 * _NUM_EXAMPLES].reshape(3, _NUM_EXAMPLES)  # [epoch, position]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(_NUM_EXAMPLES))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_processes_read_only_their_slice_of_the_same_global_batches(process_count):
    seed = 7
    expected = _order(seed).reshape(_STEPS, _GLOBAL_BATCH)  # [step, B] indices
    local_batch_size = _GLOBAL_BATCH // process_count
    sources = [_RecordingSource(_NUM_EXAMPLES) for _ in range(process_count)]
    batches = [
        loader.host_train_batches(
            source,
            local_batch_size=local_batch_size,
            seed=seed,
            process_index=p,
            process_count=process_count,
            decode=decode.ClassificationDecode(),
        )
        for p, source in enumerate(sources)
    ]
    for step in range(_STEPS):
        parts = [b[step] for b in batches]
        images = np.concatenate([part["image"] for part in parts])  # [B, 2, 2, 1]
        labels = np.concatenate([part["label"] for part in parts])  # [B]
        np.testing.assert_array_equal(images[:, 0, 0, 0], expected[step])
        np.testing.assert_array_equal(labels, expected[step] % 10)
        assert images.dtype == np.uint8 and labels.dtype == np.int32
    for p, source in enumerate(sources):
        own = expected[:, p * local_batch_size : (p + 1) * local_batch_size]
        assert source.reads == own.reshape(-1).tolist()


def test_batches_are_read_lazily_at_any_step():
    source = _RecordingSource(_NUM_EXAMPLES)
    batches = loader.host_train_batches(
        source, local_batch_size=4, seed=0, process_index=1, process_count=2,
        decode=decode.ClassificationDecode(),
    )
    batch = batches[1000]  # Epoch 160: nothing before it is read.
    expected = order.TrainOrder(_NUM_EXAMPLES, 4, 0, 1, 2)[1000]
    assert source.reads == expected.tolist()
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], expected)


def test_eval_order_pads_every_process_to_the_same_full_batches():
    # 10 examples over 3 processes (4, 3, 3) in batches of 2: 2 batches each.
    parts = [order.eval_order(10, 2, p, 3) for p in range(3)]
    for indices, mask in parts:
        assert indices.shape == mask.shape == (2, 2) and mask.dtype == bool
    np.testing.assert_array_equal(parts[0][0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(parts[1][0], [[4, 5], [6, 6]])  # Padded with 6...
    np.testing.assert_array_equal(parts[1][1], [[True, True], [True, False]])  # ...masked.
    real = np.concatenate([indices[mask] for indices, mask in parts])
    np.testing.assert_array_equal(real, np.arange(10))  # Each example once.
    empty_indices, empty_mask = order.eval_order(1, 4, 1, 2)  # A process with no example.
    np.testing.assert_array_equal(empty_indices, [[0, 0, 0, 0]])
    assert not empty_mask.any()
