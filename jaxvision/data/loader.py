"""grain loaders that turn tfds sources into global, sharded `jax.Array` batches.

The host only does what makes shapes static: decode a record to a uint8 image
and an int32 label, resizing variable-size images with PIL. All augmentation
happens on device (`jaxvision.data.augment`).

Each process reads only its own shard of the data; its local batches are
assembled into one global batch whose first dimension is sharded over the
mesh (`jax.make_array_from_process_local_data`).
"""

import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain.python as grain
import jax
import numpy as np
from PIL import Image

from jaxvision.data import datasets
from jaxvision.errors import UserError

_PREFETCH_BATCHES = 2  # Global batches prepared ahead of the training step.
# Threads reading (and tfds-decoding) records; grain's default of 16 thrashes
# small machines, where it is several times slower than one per core.
_READ_OPTIONS = grain.ReadOptions(num_threads=min(16, os.cpu_count() or 1))


class TrainIterator:
    """An endless iterator of global batches whose position can be checkpointed.

    A background thread assembles the next batches and copies them to the
    devices. `get_state` describes the position after the last batch *returned*
    (not the last one prefetched), so restoring it resumes with the next batch.
    It implements what `grain.checkpoint.CheckpointHandler` calls:
    `get_state`, `set_state` and `start_prefetch`.
    """

    def __init__(self, host_iterator: Any, sharding: jax.sharding.Sharding):
        self._host_iterator = host_iterator  # grain DataLoaderIterator.
        self._sharding = sharding
        self._state: bytes = host_iterator.get_state()
        self._buffer: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, jax.Array]:
        self.start_prefetch()
        batch, state, error = self._buffer.get()
        if error is not None:
            self._stop_prefetch()
            raise error
        self._state = state
        return batch

    def get_state(self) -> bytes:
        """Returns the position after the last batch returned by `next`."""
        return self._state

    def set_state(self, state: bytes) -> None:
        """Moves to a position from `get_state`; prefetched batches are dropped."""
        self._stop_prefetch()
        self._host_iterator.set_state(state)
        self._state = state

    def start_prefetch(self) -> None:
        """Starts preparing batches in the background (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._produce, name="jaxvision-train-prefetch", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stops the background thread."""
        self._stop_prefetch()

    def _produce(self) -> None:
        # Only this thread touches the host iterator while it runs, so each
        # state read right after a batch belongs to exactly that batch.
        try:
            while not self._stop.is_set():
                local_batch = next(self._host_iterator)
                state = self._host_iterator.get_state()
                batch = jax.make_array_from_process_local_data(
                    self._sharding, local_batch
                )
                self._buffer.put((batch, state, None))
        except Exception as e:  # noqa: BLE001 - re-raised by `__next__`.
            self._buffer.put((None, None, e))

    def _stop_prefetch(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._drain()  # Unblocks a `put`; the thread then sees `_stop` and exits.
        self._thread.join()
        self._drain()
        self._thread = None

    def _drain(self) -> None:
        while True:
            try:
                self._buffer.get_nowait()
            except queue.Empty:
                return


def make_train_iterator(
    name: str,
    split: str,
    data_dir: str | None,
    *,
    global_batch_size: int,
    seed: int,
    sharding: jax.sharding.NamedSharding,
    resize_size: int | None = None,
    worker_count: int = 0,
) -> TrainIterator:
    """Returns endless, shuffled global batches for training.

    The order is a pure function of `seed`; every epoch is reshuffled. Each
    process reads its own shard and contributes
    `global_batch_size // jax.process_count()` examples per batch.

    Args:
        name: Dataset name (see `datasets.load_source`).
        split: Split to read, e.g. "train".
        data_dir: tfds data dir; None means tfds's default.
        global_batch_size: Examples per batch over all processes.
        seed: Shuffle seed, in [0, 2**32).
        sharding: Sharding of the batch, e.g. `NamedSharding(mesh, P("data"))`.
        resize_size: Host resize: shorter side to this, then center square crop.
            Required when the dataset's images vary in size.
        worker_count: grain worker processes for decoding (0: in this process).
            Part of the order: batches differ between values, and a saved state
            restores only with the value it was saved with.

    Returns:
        A `TrainIterator` of {"image": uint8 [B, H, W, C], "label": int32 [B]}.
    """
    local_batch_size = _local_batch_size(global_batch_size, sharding)
    if not 0 <= seed < 2**32:
        raise UserError(f"config.seed={seed} must be in [0, 2**32); pick another seed.")
    source = _checked_source(name, split, data_dir, resize_size)
    loader = grain.DataLoader(
        data_source=source,
        sampler=grain.IndexSampler(
            num_records=len(source),
            shard_options=grain.ShardByJaxProcess(drop_remainder=True),
            shuffle=True,
            num_epochs=None,  # Endless; each epoch gets its own permutation.
            seed=seed,
        ),
        operations=[
            _Decode(resize_size),
            grain.Batch(local_batch_size, drop_remainder=True),
        ],
        worker_count=worker_count,
        read_options=_READ_OPTIONS,
    )
    return TrainIterator(iter(loader), sharding)


def make_eval_iterator(
    name: str,
    split: str,
    data_dir: str | None,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
    resize_size: int | None = None,
    worker_count: int = 0,
) -> Iterator[dict[str, jax.Array]]:
    """Returns one pass over a split in fixed order, every example exactly once.

    All batches have the full static size; padding examples have
    "mask" False. Every process yields the same number of batches, so
    multi-host evaluation cannot deadlock on uneven shards.

    Args:
        name: Dataset name (see `datasets.load_source`).
        split: Split to read, e.g. "test".
        data_dir: tfds data dir; None means tfds's default.
        global_batch_size: Examples per batch over all processes.
        sharding: Sharding of the batch, e.g. `NamedSharding(mesh, P("data"))`.
        resize_size: Host resize, as in `make_train_iterator`.
        worker_count: grain worker processes for decoding (0: in this process).

    Returns:
        An iterator of {"image": uint8 [B, H, W, C], "label": int32 [B],
        "mask": bool [B]}.
    """
    local_batch_size = _local_batch_size(global_batch_size, sharding)
    source = _checked_source(name, split, data_dir, resize_size)
    host_batches = host_eval_batches(
        source,
        local_batch_size=local_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        resize_size=resize_size,
        worker_count=worker_count,
    )
    return (
        jax.make_array_from_process_local_data(sharding, batch)
        for batch in host_batches
    )


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


def host_eval_batches(
    source: Sequence[Any],
    *,
    local_batch_size: int,
    process_index: int,
    process_count: int,
    resize_size: int | None = None,
    worker_count: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields one process's padded numpy eval batches (see `make_eval_iterator`)."""
    indices, num_batches = eval_shard(
        len(source), local_batch_size, process_index, process_count
    )
    padded = _PaddedShard(source, indices, num_batches * local_batch_size)
    loader = grain.DataLoader(
        data_source=padded,
        sampler=grain.IndexSampler(
            num_records=len(padded),
            shard_options=grain.NoSharding(),  # `padded` is already this shard.
            shuffle=False,
            num_epochs=1,
        ),
        operations=[_Decode(resize_size), grain.Batch(local_batch_size)],
        worker_count=worker_count,
        read_options=_READ_OPTIONS,
    )
    return iter(loader)


class _PaddedShard:
    """One process's eval examples, padded by repeating one with "mask" False."""

    def __init__(self, source: Sequence[Any], indices: np.ndarray, length: int):
        self._source = source
        self._indices = indices
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, position: int) -> dict[str, Any]:
        is_real = position < len(self._indices)
        if is_real:
            index = self._indices[position]
        else:  # Any valid record; it is masked out.
            index = self._indices[-1] if len(self._indices) else 0
        return {**self._source[int(index)], "mask": is_real}

    def __repr__(self) -> str:
        return f"_PaddedShard({self._source!r}, {len(self._indices)} of {self._length})"


class _Decode(grain.MapTransform):
    """tfds record -> {"image": uint8 [H, W, C], "label": int32 [] (, "mask")}."""

    def __init__(self, resize_size: int | None):
        self._resize_size = resize_size

    def map(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(record["image"], np.uint8)  # [H, W, C]
        if self._resize_size is not None:
            image = resize_and_center_crop(image, self._resize_size)
        example = {"image": image, "label": np.int32(record["label"])}
        if "mask" in record:
            example["mask"] = np.bool_(record["mask"])
        return example


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to `size`, then center-crops a square.

    Args:
        image: uint8 [H, W, C].
        size: Output height and width.

    Returns:
        uint8 [size, size, C]; `image` itself when it already has that shape.
    """
    height, width, channels = image.shape
    if (height, width) == (size, size):
        return image
    scale = size / min(height, width)
    new_h = max(size, round(height * scale))
    new_w = max(size, round(width * scale))
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))
    resized = resized.reshape(new_h, new_w, channels)  # [h, w, C] (grayscale too)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]  # [size, size, C]


def _local_batch_size(
    global_batch_size: int, sharding: jax.sharding.NamedSharding
) -> int:
    """Checks `global_batch_size` and returns this process's share of it."""
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


def _num_batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    """Number of pieces `sharding` cuts the batch (first) dimension into."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(sharding.mesh.shape[axis] for axis in axes)


def _checked_source(
    name: str, split: str, data_dir: str | None, resize_size: int | None
) -> Sequence[Any]:
    """Loads the source and checks that batches will have a static shape."""
    if (
        resize_size is None
        and datasets.dataset_info(name, data_dir).image_shape is None
    ):
        raise UserError(
            f"Dataset {name!r} has images of varying size; set config.data.resize_size "
            "(e.g. 256) so they are resized to one shape on the host."
        )
    return datasets.load_source(name, split, data_dir)
