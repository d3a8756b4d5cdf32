"""grain loaders that turn tfds sources into global, sharded `jax.Array` batches.

The host only does what makes shapes static: decode a record to a uint8 image
and an int32 label, resizing variable-size images with PIL. All augmentation
happens on device (`jaxvision.data.augment`).

Each process reads only its own part of every batch; the parts are assembled
into one global batch whose first dimension is sharded over the mesh
(`jax.make_array_from_process_local_data`). Training batches are cut from one
global example order, so they are the same whatever the number of processes.
"""

import functools
import math
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain.python as grain
import jax
import numpy as np
from absl import logging
from PIL import Image

from jaxvision.data import datasets
from jaxvision.errors import UserError

_PREFETCH_BATCHES = 2  # Global batches prepared ahead of the training step.
# Threads reading (and tfds-decoding) records; grain's default of 16 thrashes
# small machines, where it is several times slower than one per core.
_NUM_THREADS = min(16, os.cpu_count() or 1)
_READ_OPTIONS = grain.ReadOptions(num_threads=_NUM_THREADS)
# Train elements are whole local batches: one in flight per thread.
_TRAIN_READ_OPTIONS = grain.ReadOptions(
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
        order: dict[str, int],
        worker_count: int = 0,
    ):
        """Wraps `local_batches` (see `host_train_batches`).

        Args:
            local_batches: Element k is this process's numpy part of global batch k.
            sharding: Sharding of the global batch.
            order: The `_ORDER_KEYS` values that define the example order.
            worker_count: grain worker processes for decoding (0: in this process).
        """
        self._local_batches = local_batches
        self._sharding = sharding
        self._order = {key: int(order[key]) for key in _ORDER_KEYS}
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
                f"The data iterator state {str(state)[:100]} was not written by "
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
            dataset = self._local_batches[self._next_batch :].to_iter_dataset(
                _TRAIN_READ_OPTIONS
            )
            if self._worker_count > 0:
                # Each worker reads every `worker_count`-th batch; grain
                # interleaves them back in order, so the order is unchanged.
                dataset = dataset.mp_prefetch(
                    grain.MultiprocessingOptions(num_workers=self._worker_count)
                )
            self._host_iterator = iter(dataset)
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
    decode: "Decode | None" = None,
    worker_count: int = 0,
    cache: bool = False,
) -> TrainIterator:
    """Returns endless, shuffled global batches for training.

    The batches are a pure function of `seed` and `global_batch_size`: neither
    the number of processes nor `worker_count` changes them (see
    `train_shard`). Each process reads and decodes only its
    `global_batch_size // jax.process_count()` examples of each batch.

    Args:
        name: Dataset name (see `datasets.load_source`).
        split: Split to read, e.g. "train".
        data_dir: tfds data dir; None means tfds's default.
        global_batch_size: Examples per batch over all processes.
        seed: Shuffle seed, in [0, 2**32).
        sharding: Sharding of the batch, e.g. `NamedSharding(mesh, P("data"))`.
        decode: Record -> fixed-shape example (`ClassificationDecode()` when
            None; `DetectionDecode` for detection datasets).
        worker_count: grain worker processes for decoding (0: in this process).
        cache: Keep every record in memory after its first read (for datasets
            that fit in RAM: tfds's per-record deserialization then happens
            once, not every epoch).

    Returns:
        A `TrainIterator` of `decode`'s examples stacked into global batches,
        e.g. {"image": uint8 [B, H, W, C], "label": int32 [B]}.
    """
    local_batch_size = _local_batch_size(global_batch_size, sharding)
    if not 0 <= seed < 2**32:
        raise UserError(f"config.seed={seed} must be in [0, 2**32); pick another seed.")
    decode = decode or ClassificationDecode()
    source = _checked_source(name, split, data_dir, decode, cache)
    if not len(source):
        raise UserError(
            f"The train split {split!r} of {name!r} is empty; set "
            "config.data.train_split to a split with examples."
        )
    block, num_blocks = _process_block(
        sharding, global_batch_size, jax.process_count()
    )
    local_batches = host_train_batches(
        source,
        local_batch_size=local_batch_size,
        seed=seed,
        process_index=block,
        process_count=num_blocks,
        decode=decode,
    )
    order = {
        "seed": seed,
        "global_batch_size": global_batch_size,
        "num_examples": len(source),
    }
    return TrainIterator(
        local_batches, sharding, order=order, worker_count=worker_count
    )


def train_shard(
    num_examples: int,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
) -> grain.MapDataset:
    """Splits the training order over processes.

    There is one global order of examples, a function of `seed` only: a fresh
    permutation of all examples every epoch, the epochs one after another, cut
    into consecutive global batches of `local_batch_size * process_count`.
    Process p takes positions [p * local_batch_size, (p + 1) * local_batch_size)
    of each global batch, so the processes' parts, concatenated in process
    order, are the same global batches for any `process_count`. A global batch
    may straddle two epochs (the end of one permutation, the start of the
    next); every example still comes once per epoch of the order.

    Args:
        num_examples: Size of the split (> 0).
        local_batch_size: Examples per batch on one process.
        seed: Shuffle seed, in [0, 2**32).
        process_index: This process, in [0, process_count).
        process_count: Number of processes.

    Returns:
        An endless `grain.MapDataset` whose element k is int64 [local_batch_size]:
        the example indices of this process's part of global batch k.
    """
    return grain.MapDataset.source(
        _GlobalOrder(num_examples, local_batch_size, seed, process_index, process_count)
    )


class _GlobalOrder:
    """Element k: this process's example indices of global batch k (see `train_shard`).

    Epoch e of the order is `np.random.default_rng([seed, e]).permutation(n)`;
    computed with NumPy once per epoch, an element costs microseconds (grain's
    per-index `shuffle` cost ~30 us per example, more than reading a record).
    """

    def __init__(self, num_examples: int, local_batch_size: int, seed: int,
                 process_index: int, process_count: int):
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


def host_train_batches(
    source: Sequence[Any],
    *,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    decode: "Decode | None" = None,
) -> grain.MapDataset:
    """One process's numpy train batches (see `train_shard`), random access.

    Element k is `decode`'s examples of this process's part of global batch k,
    stacked (e.g. {"image": uint8 [local_batch_size, H, W, C], "label": int32
    [local_batch_size]}), read lazily.
    """
    indices = train_shard(
        len(source), local_batch_size, seed, process_index, process_count
    )
    return indices.map(_ReadBatch(source, decode or ClassificationDecode()))


def make_eval_iterator(
    name: str,
    split: str,
    data_dir: str | None,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
    decode: "Decode | None" = None,
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
        decode: Record -> example, as in `make_train_iterator`.
        worker_count: grain worker processes for decoding (0: in this process).

    Returns:
        An iterator of `decode`'s examples in global batches with a "mask" bool
        [B], e.g. {"image": uint8 [B, H, W, C], "label": int32 [B], "mask": bool [B]}.
    """
    local_batch_size = _local_batch_size(global_batch_size, sharding)
    decode = decode or ClassificationDecode()
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
    decode: "Decode | None" = None,
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
        operations=[decode or ClassificationDecode(), grain.Batch(local_batch_size)],
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


class Decode(grain.MapTransform):
    """A tfds record -> one example of NumPy arrays whose shapes never vary.

    Subclasses implement `decode` and `check`; `map` adds the eval "mask".
    """

    def map(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        example = self.decode(record)
        if "mask" in record:  # Eval padding (see `_PaddedShard`).
            example["mask"] = np.bool_(record["mask"])
        return example

    def decode(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        """Raises UserError if this decode cannot give `name`'s records static shapes."""


class ClassificationDecode(Decode):
    """Record -> {"image": uint8 [H, W, C], "label": int32 []}.

    Attributes:
        resize_size: Host resize: shorter side to this, then center square crop.
            Required when the dataset's images vary in size.
    """

    def __init__(self, resize_size: int | None = None):
        self.resize_size = resize_size

    def decode(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(record["image"], np.uint8)  # [H, W, C]
        if self.resize_size is not None:
            image = resize_and_center_crop(image, self.resize_size)
        return {"image": image, "label": np.int32(record["label"])}

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        if info.is_detection:
            raise UserError(
                f"Dataset {name!r} is a detection dataset; train it with a detection "
                "config (config.task = 'detection')."
            )
        if self.resize_size is None and info.image_shape is None:
            raise UserError(
                f"Dataset {name!r} has images of varying size; set config.data.resize_size "
                "(e.g. 256) so they are resized to one shape on the host."
            )


class DetectionDecode(Decode):
    """Detection record (tfds `coco` layout) -> fixed canvas and padded boxes.

    The record holds "image" uint8 [H, W, C], "image/id" and "objects" with
    "bbox" float [N, 4] normalized (ymin, xmin, ymax, xmax), "label" int [N]
    and optionally "is_crowd" bool [N]. The image is resized (bilinear) so its
    longer side is `image_size`, placed at the top-left of a zero canvas, and
    its boxes are converted to canvas pixels, xyxy.

    Degenerate boxes follow one rule: a box is clipped to the image, and
    dropped (with a warning naming the example id, once per example) when a
    coordinate is NaN or its clipped width or height is not positive.

    Attributes:
        image_size: Side S of the square canvas.
        max_boxes: M, the padded number of boxes; an example with more boxes
            raises UserError naming config.data.max_boxes.
    """

    def __init__(self, image_size: int, max_boxes: int):
        self.image_size = image_size
        self.max_boxes = max_boxes
        self._warned: set[int] = set()  # Example ids with dropped boxes, reported once.

    def decode(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(record["image"], np.uint8)  # [H, W, C]
        height, width, channels = image.shape
        image_id = int(record["image/id"])
        scale = self.image_size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        canvas = np.zeros((self.image_size, self.image_size, channels), np.uint8)
        canvas[:new_h, :new_w] = _resize(image, new_h, new_w)  # [S, S, C]

        objects = record["objects"]
        yxyx = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)  # [N, 4]
        size = np.array([new_w, new_h, new_w, new_h], np.float32)
        boxes = yxyx[:, [1, 0, 3, 2]] * size  # [N, 4] xyxy canvas pixels
        labels = np.asarray(objects["label"], np.int32).reshape(-1)  # [N]
        crowd = np.asarray(
            objects.get("is_crowd", np.zeros(len(labels), bool)), bool
        ).reshape(-1)  # [N]
        finite = np.isfinite(boxes).all(axis=1)  # [N]
        boxes = np.clip(np.nan_to_num(boxes), 0, size)  # [N, 4]
        keep = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not keep.all() and image_id not in self._warned:
            self._warned.add(image_id)
            logging.warning(
                "Example %d: dropped %d of %d boxes that are NaN or have no area "
                "inside the image.", image_id, int((~keep).sum()), len(keep),
            )
        boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
        num = len(labels)
        if num > self.max_boxes:
            raise UserError(
                f"Example {image_id} has {num} objects, more than "
                f"config.data.max_boxes={self.max_boxes}; raise config.data.max_boxes "
                f"to at least {num}."
            )
        pad = self.max_boxes - num
        return {
            "image": canvas,
            "boxes": np.pad(boxes, ((0, pad), (0, 0))),  # [M, 4]
            "labels": np.pad(labels, (0, pad)),  # [M]
            "box_mask": np.arange(self.max_boxes) < num,  # [M]
            "crowd": np.pad(crowd, (0, pad)),  # [M]
            "image_id": np.int32(image_id),
            # (x, y) canvas pixels per original pixel: eval maps boxes back with it.
            "scale": np.array([new_w / width, new_h / height], np.float32),  # [2]
            "height": np.int32(height),
            "width": np.int32(width),
        }

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        if not info.is_detection:
            raise UserError(
                f"Dataset {name!r} has no object boxes ('objects'); use a detection "
                "dataset (e.g. digit_detection or coco/2017) with a detection config."
            )


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 [H, W, C] to [height, width, C] (a no-op if equal)."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return resized.reshape(height, width, channels)


class _ReadBatch(grain.MapTransform):
    """Example indices int [B] -> `decode`'s examples stacked, e.g. image [B, H, W, C]."""

    def __init__(self, source: Sequence[Any], decode: Decode):
        self._source = source
        self._decode = decode

    def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        examples = [self._decode.map(self._source[int(i)]) for i in indices]
        return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


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


def _process_block(
    sharding: jax.sharding.Sharding, global_batch_size: int, process_count: int
) -> tuple[int, int]:
    """Which part of every global batch this process's devices hold.

    Args:
        sharding: Sharding of the batch.
        global_batch_size: Examples per batch over all processes.
        process_count: Number of processes.

    Returns:
        (index, count): the devices hold rows [index * b, (index + 1) * b),
        b = global_batch_size // count. `index` is `jax.process_index()` when
        the mesh lists each process's devices together, as `jax.devices()` does.
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
    return block, process_count


def _num_batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    """Number of pieces `sharding` cuts the batch (first) dimension into."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(sharding.mesh.shape[axis] for axis in axes)


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
    decode.check(name, datasets.dataset_info(name, data_dir))
    source = datasets.load_source(name, split, data_dir)
    return _CachedSource(source) if cache else source
