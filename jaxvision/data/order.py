"""Which examples go into which batch on which process: pure index math, no I/O.

Training reads one global, seeded order of examples cut into global batches;
each process takes its own consecutive block of every global batch, so the
batches are the same whatever the number of processes (`TrainOrder`).
Evaluation splits a split into contiguous per-process shards and pads them
to the same number of full batches, with a mask that marks the padding
(`eval_order`).
"""

import functools
import math
import sys

import jax
import numpy as np

from jaxvision.errors import UserError


class TrainOrder:
    """Element k: this process's example indices of global batch k, int64 [b].

    There is one global order of examples, a function of `seed` only: a fresh
    permutation of all examples every epoch (epoch e is
    `np.random.default_rng([seed, e]).permutation(n)`), the epochs one after
    another, cut into consecutive global batches of
    `local_batch_size * process_count`. Process p takes positions
    [p * local_batch_size, (p + 1) * local_batch_size) of each global batch, so
    the processes' parts, concatenated in process order, are the same global
    batches for any `process_count`. A global batch may straddle two epochs;
    every example still comes once per epoch of the order.

    Endless and random access: element k costs microseconds whatever k (one
    NumPy permutation per epoch, cached), so resuming at batch k reads nothing
    before it.
    """

    def __init__(self, num_examples: int, local_batch_size: int, seed: int,
                 process_index: int, process_count: int):
        """See the class docstring; `num_examples` > 0, `seed` in [0, 2**32)."""
        self._n = num_examples
        self._b = local_batch_size
        self._seed = seed
        self._p = process_index
        self._num_p = process_count

    def __len__(self) -> int:
        return sys.maxsize  # Endless.

    def __getitem__(self, k: int) -> np.ndarray:
        start = (k * self._num_p + self._p) * self._b  # Position in the endless order.
        epochs, offsets = np.divmod(np.arange(start, start + self._b), self._n)  # [b]
        return np.array([  # [b] example indices
            _epoch_permutation(self._n, self._seed, int(e))[o]
            for e, o in zip(epochs, offsets)
        ])


@functools.lru_cache(maxsize=8)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(num_examples)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def eval_shard(
    num_examples: int, local_batch_size: int, process_index: int, process_count: int
) -> tuple[np.ndarray, int]:
    """Splits an eval pass over processes.

    Args:
        num_examples: Size of the split.
        local_batch_size: Examples per batch on one process.
        process_index: This process, in [0, process_count).
        process_count: Number of processes.

    Returns:
        The example indices this process reads (contiguous, disjoint from the
        other processes', together all of them) and the number of batches
        that every process yields.
    """
    indices = np.array_split(np.arange(num_examples), process_count)[process_index]
    largest_shard = math.ceil(num_examples / process_count)
    return indices, math.ceil(largest_shard / local_batch_size)


def eval_order(
    num_examples: int, local_batch_size: int, process_index: int, process_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """This process's eval batches: example indices and which of them are real.

    Every process gets the same number of full batches (`eval_shard`), so
    multi-process evaluation cannot deadlock on uneven shards. Padding
    positions repeat one valid example (the shard's last, or example 0 for an
    empty shard) and are marked False in the mask.

    Returns:
        indices int64 [num_batches, local_batch_size] and mask bool of the
        same shape (True: a real example of this shard, each exactly once).
    """
    indices, num_batches = eval_shard(
        num_examples, local_batch_size, process_index, process_count
    )
    length = num_batches * local_batch_size
    mask = np.arange(length) < len(indices)  # [length]
    filler = indices[-1] if len(indices) else 0  # Any valid record; masked out.
    padded = np.concatenate(
        [indices, np.full(length - len(indices), filler, indices.dtype)]
    )  # [length]
    shape = (num_batches, local_batch_size)
    return padded.reshape(shape), mask.reshape(shape)


def local_batch_size(
    global_batch_size: int, sharding: jax.sharding.NamedSharding
) -> int:
    """Checks `global_batch_size` and returns this process's share of it.

    Raises:
        UserError: it does not divide over the devices and processes.
    """
    num_processes = jax.process_count()
    num_shards = _num_batch_shards(sharding)
    multiple = math.lcm(num_processes, num_shards)
    if global_batch_size <= 0 or global_batch_size % multiple:
        raise UserError(
            f"config.batch_size={global_batch_size} must be a positive multiple of "
            f"the {num_shards} devices the batch is split over and of the "
            f"{num_processes} processes; use a multiple of {multiple}."
        )
    return global_batch_size // num_processes


def process_block(
    sharding: jax.sharding.Sharding, global_batch_size: int, process_count: int
) -> int:
    """Which block of every global batch this process's devices hold.

    Args:
        sharding: Sharding of the batch.
        global_batch_size: Examples per batch over all processes.
        process_count: Number of processes.

    Returns:
        index: the devices hold rows [index * b, (index + 1) * b),
        b = global_batch_size // process_count. It is `jax.process_index()`
        when the mesh lists each process's devices together, as
        `jax.devices()` does.

    Raises:
        UserError: the rows are not one such block.
    """
    size = global_batch_size // process_count
    indices = sharding.addressable_devices_indices_map((global_batch_size,))
    rows = set().union(
        *(range(*index[0].indices(global_batch_size)) for index in indices.values())
    )
    block = min(rows) // size
    if rows != set(range(block * size, (block + 1) * size)):
        raise UserError(
            f"The batch sharding gives this process {len(rows)} rows of each batch "
            f"of {global_batch_size}, not one block of {size}; build the mesh with "
            "each process's devices next to each other and the batch split over "
            "all of them (parallel.batch_sharding)."
        )
    return block


def _num_batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    """Number of pieces `sharding` cuts the batch (first) dimension into."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(sharding.mesh.shape[axis] for axis in axes)
