"""grain loaders: tfds sources in, global sharded `jax.Array` batches out.

One grain pipeline serves training and evaluation: a `grain.MapDataset` of
index batches (from `jaxvision.data.order`) mapped to decoded example batches
(`jaxvision.data.decode`), read ahead by grain's threads or worker processes.
Each process reads only its own part of every batch; the parts are assembled
into one global batch whose first dimension is sharded over the mesh
(`jax.make_array_from_process_local_data`).

Training batches come from one global example order, so they are the same
whatever the number of processes, and the train iterator's position can be
checkpointed (`TrainIterator`). An eval pass reads every example once, in
full batches with a "mask" marking the padding.
"""

import os
import queue
import textwrap
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain.python as grain
import jax
import numpy as np
from absl import logging

from jaxvision.data import datasets, order
from jaxvision.data.decode import Decode
from jaxvision.errors import UnreadableImage, UserError

_PREFETCH_BATCHES = 2  # Global train batches placed on the devices ahead of the step.
# Threads reading (and tfds-decoding) records; grain's default of 16 thrashes
# small machines, where it is several times slower than one per core. An
# element is a whole local batch: one in flight per thread.
_NUM_THREADS = min(16, os.cpu_count() or 1)
_READ_OPTIONS = grain.ReadOptions(
    num_threads=_NUM_THREADS, prefetch_buffer_size=_NUM_THREADS
)
# What a saved train state must share with the iterator it is restored into.
_ORDER_KEYS = ("seed", "global_batch_size", "num_examples")


class TrainIterator:
    """An endless iterator of global batches whose position can be checkpointed.

    grain threads (and `worker_count` processes) read and decode the next local
    batches; a background thread copies them to the devices. The state is a
    JSON-able dict `{"next_batch": k, "seed": ..., "global_batch_size": ...,
    "num_examples": ...}`, where k counts the batches *returned* (not
    prefetched), so restoring it resumes with global batch k. It is the same on
    every process, so `jaxvision.checkpoint` saves it once and a run can
    resume with another number of processes.
    """

    def __init__(
        self,
        local_batches: grain.MapDataset,
        sharding: jax.sharding.Sharding,
        *,
        train_order: dict[str, int],
        worker_count: int = 0,
    ):
        """Wraps `local_batches` (see `host_train_batches`).

        Args:
            local_batches: Element k is this process's numpy part of global batch k.
            sharding: Sharding of the global batch.
            train_order: The `_ORDER_KEYS` values that define the example order.
            worker_count: grain worker processes for decoding (0: in this process).
        """
        self._local_batches = local_batches
        self._sharding = sharding
        self._order = {key: int(train_order[key]) for key in _ORDER_KEYS}
        self._worker_count = worker_count
        self._next_batch = 0  # Index of the next global batch `next` returns.
        self._host_iterator: Any = None  # grain DatasetIterator, from `_next_batch`.
        self._buffer: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, jax.Array]:
        self.start_prefetch()
        batch, error = self._buffer.get()
        if error is not None:
            self.close()
            raise error
        self._next_batch += 1
        return batch

    def get_state(self) -> dict[str, int]:
        """Returns the position after the last batch returned by `next`."""
        return {"next_batch": self._next_batch, **self._order}

    def set_state(self, state: dict[str, int]) -> None:
        """Moves to a position from `get_state`; prefetched batches are dropped.

        Raises:
            UserError: `state` was saved with another seed, batch size or dataset.
        """
        saved = state
        if not isinstance(saved, dict) or "next_batch" not in saved:
            raise UserError(
                f"The data iterator state {textwrap.shorten(str(state), 100)} was not written by "
                "this version of jaxvision's train loader; use a new --workdir."
            )
        for key, value in self._order.items():
            if saved.get(key) != value:
                raise UserError(
                    f"The data iterator state was saved with {key}={saved.get(key)} "
                    f"but this run has {key}={value}; resume with the same seed, "
                    "batch size and dataset split, or use a new --workdir."
                )
        self.close()
        self._next_batch = int(saved["next_batch"])

    def start_prefetch(self) -> None:
        """Starts preparing batches in the background (idempotent)."""
        if self._thread is None:
            self._host_iterator = _read_ahead(
                self._local_batches[self._next_batch :], self._worker_count
            )
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._produce, name="jaxvision-train-prefetch", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stops the background thread and grain's threads and processes."""
        if self._thread is not None:
            self._stop.set()
            self._drain()  # Unblocks a `put`; the thread then sees `_stop`, exits.
            self._thread.join()
            self._drain()
            self._thread = None
        if self._host_iterator is not None:
            self._host_iterator.close()
            self._host_iterator = None

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                local_batch = next(self._host_iterator)
                batch = jax.make_array_from_process_local_data(
                    self._sharding, local_batch
                )
                self._buffer.put((batch, None))
        except Exception as e:  # noqa: BLE001 - re-raised by `__next__`.
            self._buffer.put((None, e))

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
    decode: Decode,
    worker_count: int = 0,
    cache: bool = False,
) -> TrainIterator:
    """Returns endless, shuffled global batches for training.

    The batches are a pure function of `seed` and `global_batch_size`: neither
    the number of processes nor `worker_count` changes them (see
    `order.TrainOrder`). Each process reads and decodes only its
    `global_batch_size // jax.process_count()` examples of each batch.

    Args:
        name: Dataset name (see `datasets.load_source`).
        split: Split to read, e.g. "train".
        data_dir: tfds data dir; None means tfds's default.
        global_batch_size: Examples per batch over all processes.
        seed: Shuffle seed, in [0, 2**32).
        sharding: Sharding of the batch, e.g. `NamedSharding(mesh, P("data"))`.
        decode: Record -> fixed-shape example, e.g. `ClassificationDecode()`
            or `DetectionDecode(...)` (the task's `make_decode`).
        worker_count: grain worker processes for decoding (0: in this process).
        cache: Keep every record in memory after its first read (for datasets
            that fit in RAM: tfds's per-record deserialization then happens
            once, not every epoch).

    Returns:
        A `TrainIterator` of `decode`'s examples stacked into global batches,
        e.g. {"image": uint8 [B, H, W, C], "label": int32 [B]}.
    """
    local_batch_size = order.local_batch_size(global_batch_size, sharding)
    if not 0 <= seed < 2**32:
        raise UserError(f"config.seed={seed} must be in [0, 2**32); pick another seed.")
    source = _checked_source(name, split, data_dir, decode, cache)
    if not len(source):
        raise UserError(
            f"The train split {split!r} of {name!r} is empty; set "
            "config.data.train_split to a split with examples."
        )
    process_count = jax.process_count()
    local_batches = host_train_batches(
        source,
        local_batch_size=local_batch_size,
        seed=seed,
        process_index=order.process_block(sharding, global_batch_size, process_count),
        process_count=process_count,
        decode=decode,
    )
    train_order = {
        "seed": seed,
        "global_batch_size": global_batch_size,
        "num_examples": len(source),
    }
    return TrainIterator(
        local_batches, sharding, train_order=train_order, worker_count=worker_count
    )


def host_train_batches(
    source: Sequence[Any],
    *,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    decode: Decode,
) -> grain.MapDataset:
    """One process's numpy train batches (see `order.TrainOrder`), random access.

    Element k is `decode`'s examples of this process's part of global batch k,
    stacked (e.g. {"image": uint8 [local_batch_size, H, W, C], "label": int32
    [local_batch_size]}), read lazily.
    """
    indices = order.TrainOrder(
        len(source), local_batch_size, seed, process_index, process_count
    )
    return grain.MapDataset.source(indices).map(_ReadBatch(source, decode))


def make_eval_iterator(
    name: str,
    split: str,
    data_dir: str | None,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
    decode: Decode,
    worker_count: int = 0,
) -> Iterator[dict[str, jax.Array]]:
    """Returns one pass over a split in fixed order, every example exactly once.

    All batches have the full static size; padding examples have "mask"
    False. Every process yields the same number of batches, so multi-host
    evaluation cannot deadlock on uneven shards.

    Args:
        name: Dataset name (see `datasets.load_source`).
        split: Split to read, e.g. "test".
        data_dir: tfds data dir; None means tfds's default.
        global_batch_size: Examples per batch over all processes.
        sharding: Sharding of the batch, e.g. `NamedSharding(mesh, P("data"))`.
        decode: Record -> example, as in `make_train_iterator`.
        worker_count: grain worker processes for decoding (0: in this process).

    Returns:
        An iterator of `decode`'s examples in global batches with a "mask" bool
        [B], e.g. {"image": uint8 [B, H, W, C], "label": int32 [B], "mask": bool [B]}.
    """
    local_batch_size = order.local_batch_size(global_batch_size, sharding)
    source = _checked_source(name, split, data_dir, decode)
    host_batches = host_eval_batches(
        source,
        local_batch_size=local_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        decode=decode,
        worker_count=worker_count,
    )
    return (
        jax.make_array_from_process_local_data(sharding, batch)
        for batch in host_batches
    )


def host_eval_batches(
    source: Sequence[Any],
    *,
    local_batch_size: int,
    process_index: int,
    process_count: int,
    decode: Decode,
    worker_count: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """One process's padded numpy eval batches (see `order.eval_order`), in order."""
    indices, mask = order.eval_order(
        len(source), local_batch_size, process_index, process_count
    )  # [num_batches, b] each
    batches = grain.MapDataset.source(list(zip(indices, mask, strict=True)))
    return _read_ahead(batches.map(_ReadPaddedBatch(source, decode)), worker_count)


def _read_ahead(batches: grain.MapDataset, worker_count: int) -> grain.DatasetIterator:
    """Iterates over `batches` in order, reading ahead in threads (and `worker_count` processes)."""
    dataset = batches.to_iter_dataset(_READ_OPTIONS)
    if worker_count > 0:
        # Each worker reads every `worker_count`-th batch; grain interleaves
        # them back in order, so the order is unchanged.
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(dataset)


class _ReadBatch(grain.MapTransform):
    """Example indices int [B] -> `decode`'s examples stacked, e.g. image [B, H, W, C].

    A record whose image does not decode (`UnreadableImage`) is replaced by
    the next readable one (i + 1, i + 2, ... modulo the source's length), so
    batches keep their shape and the order stays a function of the seed; each
    such file is named in one warning per process.
    """

    def __init__(self, source: Sequence[Any], decode: Decode):
        self._source = source
        self._decode = decode
        self._unreadable: set[str] = set()  # Messages of the unreadable images seen here.

    def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return self._stack(indices)[0]

    def _stack(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The examples stacked and bool [B]: whether each is record `indices[b]` itself."""
        examples, read = zip(*(self._read(int(i)) for i in indices), strict=True)
        return {key: np.stack([e[key] for e in examples]) for key in examples[0]}, np.array(read)

    def _read(self, index: int) -> tuple[dict[str, np.ndarray], bool]:
        """Record `index` decoded, or the next readable one; and whether it was `index`."""
        size = len(self._source)
        for offset in range(size):
            try:
                return self._decode(self._source[(index + offset) % size]), offset == 0
            except UnreadableImage as e:
                if str(e) not in self._unreadable:
                    self._unreadable.add(str(e))
                    logging.warning(
                        "%s The next record is read in its place (skipped %d unreadable "
                        "images so far).", e, len(self._unreadable),
                    )
        raise UserError(
            f"No record of {self._source!r} is readable (every image fails to decode, see "
            "the warnings); check that its files are images."
        )


class _ReadPaddedBatch(_ReadBatch):
    """(indices int [B], mask bool [B]) -> the examples stacked, plus "mask".

    "mask" is False for padding and for unreadable records (see `_ReadBatch`).
    """

    def map(self, element: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        indices, mask = element
        examples, read = self._stack(indices)
        return {**examples, "mask": mask & read}


class _CachedSource:
    """A source that keeps each record after its first read, for data that fits in RAM."""

    def __init__(self, source: Sequence[Any]):
        self._source = source
        self._records: list[Any] = [None] * len(source)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Any:
        record = self._records[index]
        if record is None:  # Two threads may both read it once; both get the same.
            record = self._records[index] = self._source[index]
        return record

    def __repr__(self) -> str:
        return f"_CachedSource({self._source!r})"


def _checked_source(
    name: str, split: str, data_dir: str | None, decode: Decode, cache: bool = False,
) -> Sequence[Any]:
    """Loads the source (cached in memory if asked) and checks for static shapes."""
    decode.check(name, datasets.dataset_info(name, data_dir, split))
    source = datasets.load_source(name, split, data_dir)
    return _CachedSource(source) if cache else source
