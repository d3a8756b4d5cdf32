"""Speed of a config's train step, eval step or data loader, and why.

`run_benchmark` builds the config's `Trainer` and times its jitted step on
synthetic data of the config's shapes (no dataset needed), or its real loader
alone (`mode="input"`). It reports compile time apart from step time, step
times with `block_until_ready` after every step, images/s, XLA's FLOPs, MFU and
memory (`jaxvision.profiling`).

`reference=True` also times `reference_train_step`: the smallest hand-written
step of the same model and optimizer (no augmentation, RNG bookkeeping or
metrics; inputs already normalized floats). `overhead_ratio` is our images/s
over its images/s: what the trainer's conveniences cost. The two steps run
alternately, so drift in the machine's speed hits both alike.
"""

import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxvision import data, profiling, tracking
from jaxvision.errors import UserError
from jaxvision.experiment import Experiment
from jaxvision.tasks import tracking as tracking_task
from jaxvision.train import Trainer, model_variables

MODES = ("train", "eval", "input", "track")
# Catalog datasets whose tfds builder needs TensorFlow to describe them: what
# the benchmark assumes when they are not prepared here (tfds declares COCO
# 2017 with 80 classes and RGB images of varying sizes).
_UNPREPARED_INFO = {
    "coco/2017": data.DatasetInfo(
        num_classes=80, class_names=tuple(f"class_{i}" for i in range(80)),
        num_examples={}, image_shape=None, is_detection=True,
    ),
}
# The train-set size given to the Trainer on synthetic data: it only sets
# the learning-rate schedule's length, not the speed.
_SYNTHETIC_NUM_EXAMPLES = 1_000_000


def select_platform(device: str | None):
    """Makes JAX use `device` ("cpu" or "gpu"); call before any JAX device use.

    Raises:
      UserError: an unknown device, or no such device visible to JAX.
    """
    if device is None:
        return
    if device not in ("cpu", "gpu"):
        raise UserError(f"--device={device} is not supported; use cpu or gpu.")
    jax.config.update("jax_platforms", device)
    try:
        jax.devices()
    except (RuntimeError, AssertionError) as e:  # No such backend (the error varies).
        raise UserError(
            f"--device={device} but JAX finds no {device.upper()} on this machine; on a "
            "GPU machine install jax's CUDA wheels (pip install -e '.[cuda12]'), or use "
            "--device cpu."
        ) from e


def check_steps(steps: int, warmup: int):
    """Raises `UserError` unless `steps >= 1` and `warmup >= 0` (the `--steps`, `--warmup` flags)."""
    if steps < 1 or warmup < 0:
        raise UserError(f"--steps={steps} must be >= 1 and --warmup={warmup} >= 0.")


def write_json(result: dict[str, Any], path: str):
    """Writes `result` to `path` as indented JSON (the `--json` flag).

    Raises:
      UserError: the file cannot be written.
    """
    try:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    except OSError as e:
        raise UserError(f"Cannot write --json {path!r} ({e.strerror}).") from e


def override(
    config: ml_collections.ConfigDict, *, batch_size: int | None = None,
    dtype: str | None = None, image_size: int | None = None,
) -> ml_collections.ConfigDict:
    """`config` with the benchmark's overrides applied in place (None keeps a field).

    `batch_size` sets the train and eval batch; `image_size` the canvas side
    of a detector (`data.image_size`) or a classifier's crop and host resize
    (`augment.crop_size`, `data.resize_size`). The torchvision peers in
    `benchmarks/` read the same config through this function.
    """
    with config.unlocked():
        if batch_size is not None:
            config.batch_size = config.eval_batch_size = batch_size
        if dtype is not None:
            config.dtype = dtype
        if image_size is not None and config.task in ("detection", "tracking"):
            config.data.image_size = image_size  # The canvas side.
        elif image_size is not None:
            config.augment.crop_size = config.data.resize_size = image_size
    return config


def synthetic_info(config: ml_collections.ConfigDict) -> data.DatasetInfo:
    """The dataset's info, or the known shape of an unprepared catalog dataset (COCO).

    Raises:
      UserError: the dataset is not prepared and its shape is not known here.
    """
    try:
        return data.dataset_info(
            config.data.name, config.data.data_dir, config.data.train_split)
    except UserError:
        if config.data.name not in _UNPREPARED_INFO:
            raise
        logging.info("%s is not prepared; benchmarking with its declared shape.",
                     config.data.name)
        return _UNPREPARED_INFO[config.data.name]


def synthetic_batch(exp: Experiment, batch_size: int, seed: int = 0) -> dict[str, jax.Array]:
    """A random global batch shaped like the task's real ones, sharded like them.

    Each process makes its own rows with the task's `synthetic_batch`
    (`jaxvision/tasks/`): uint8 images and random labels (and boxes).
    """
    devices = exp.mesh.size
    if batch_size <= 0 or batch_size % devices or batch_size % jax.process_count():
        raise UserError(
            f"Batch size {batch_size} must be a positive multiple of the {devices} "
            f"devices; use a multiple of {devices}."
        )
    local = batch_size // jax.process_count()  # This process's rows.
    rng = np.random.default_rng(seed + jax.process_index())
    host = exp.task.synthetic_batch(exp.config, exp.info, local, rng)
    return {
        k: jax.make_array_from_process_local_data(exp.batch_sharding, v)
        for k, v in host.items()
    }


def reference_train_step(
    params: Any, batch_stats: Any, opt_state: optax.OptState,
    images: jax.Array, targets: dict[str, jax.Array], rng: jax.Array, *,
    model: Any, tx: optax.GradientTransformation,
) -> tuple[Any, Any, optax.OptState, jax.Array]:
    """The minimal Flax train step: model, bare loss, gradients, optimizer update.

    `images` float `[B, H, W, C]`, already normalized. The loss is
    cross-entropy on `targets["label"]` `[B]` for classifiers (of the margin
    head's logits for recognizers), and the detector's own `training_loss` on
    `targets["boxes"]`, `["labels"]` and `["box_mask"]` (and `["masks"]`) for
    detectors.
    """
    variables = {"batch_stats": batch_stats}
    rngs = {"dropout": rng, "sampling": rng}

    def loss_fn(params):
        if hasattr(model, "training_loss"):  # A detector: its outputs are its business.
            (loss, _), updates = model.apply(
                {**variables, "params": params}, images, targets, method="training_loss",
                rngs=rngs, mutable=["batch_stats"],
            )
        else:
            inputs, method = (images,), None
            if hasattr(model, "margin_logits"):  # A recognizer: its margin head's logits.
                inputs, method = (images, targets["label"]), "margin_logits"
            logits, updates = model.apply(
                {**variables, "params": params}, *inputs, train=True, rngs=rngs,
                mutable=["batch_stats"], method=method,
            )  # [B, K]
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits, targets["label"]
            ).mean()
        return loss, updates.get("batch_stats", batch_stats)

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss


def _compile(jitted: Callable, *args: Any) -> tuple[Any, float, float]:
    """`jitted.lower(*args).compile()`, the seconds it took, and those of `lower` alone."""
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start, lowered_at - start


def _time_alternately(
    runners: dict[str, tuple[Callable, Any]], steps: int, warmup: int
) -> dict[str, list[float]]:
    """Runs each `fn(carry) -> (carry, output)` in turn, `warmup + steps` times.

    The carry (a donated state) is fed back in, and every step's carry and
    output are waited for. Returns the timed steps' seconds, per runner.
    """
    carries = {name: carry for name, (_, carry) in runners.items()}
    times = {name: [] for name in runners}
    for i in range(warmup + steps):
        for name, (fn, _) in runners.items():
            start = time.perf_counter()
            carries[name], _ = jax.block_until_ready(fn(carries[name]))
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _summary(times: list[float], batch_size: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "step_time_median_s": median, "step_time_min_s": min(times),
        "step_time_max_s": max(times), "images_per_s": batch_size / median,
    }


def run_benchmark(
    config: ml_collections.ConfigDict, *, mode: str = "train", steps: int = 50,
    warmup: int = 3, reference: bool = False,
) -> dict[str, Any]:
    """Times `steps` steps (after `warmup`) of the config's train or eval step, or its loader.

    Args:
      config: the experiment config (batch size, dtype, image size as set there).
      mode: "train" / "eval": the jitted step on synthetic data; "input": the
        real data loader alone (needs the prepared dataset); "track": the
        tracker alone (`_benchmark_tracker`).
      steps: timed steps.
      warmup: untimed steps before them (compilation is timed separately).
      reference: also time `reference_train_step` (train mode only).

    Returns:
      A JSON-able dict of the measurements; see docs/performance.md.
    """
    if mode not in MODES:
        raise UserError(f"Unknown benchmark mode {mode!r}; use one of {MODES}.")
    check_steps(steps, warmup)
    if reference and mode != "train":
        raise UserError("--reference compares train steps; drop it or use --train.")
    batch_size = config.eval_batch_size if mode == "eval" else config.batch_size
    device = jax.devices()[0]
    result = {
        "mode": mode, "device_kind": device.device_kind, "platform": device.platform,
        "num_devices": jax.device_count(), "jax_version": jax.__version__,
        "task": config.task, "dtype": config.dtype, "batch_size": batch_size,
        "steps": steps, "warmup": warmup,
        # With a persistent cache, compile_s may be a cache hit; lower_s never is.
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
    }
    if mode == "input":
        return {**result, **_benchmark_input(config, batch_size, steps, warmup)}
    if mode == "track":
        return {**result, **_benchmark_tracker(config, steps, warmup)}

    trainer = Trainer(
        Experiment(config, info=synthetic_info(config)),
        num_train_examples=_SYNTHETIC_NUM_EXAMPLES,
    )
    exp = trainer.experiment
    batch = synthetic_batch(exp, batch_size)
    state = trainer.init_state()
    result["image_size"] = batch["image"].shape[1]
    result["param_count"] = sum(x.size for x in jax.tree.leaves(state.params))
    if mode == "train":
        compiled, result["compile_s"], result["lower_s"] = _compile(trainer.train_step, state, batch)
        runners = {"ours": (lambda s: compiled(s, batch), state)}  # -> (state, metrics)
    else:
        variables = model_variables(state)
        compiled, result["compile_s"], result["lower_s"] = _compile(exp.eval_step, variables, batch)
        runners = {"ours": (lambda v: (v, compiled(v, batch)), variables)}
    if reference:
        runners["reference"], result["reference_compile_s"] = _reference(trainer, batch)
    times = _time_alternately(runners, steps, warmup)
    result.update(_summary(times["ours"], batch_size))
    if reference:
        ref = _summary(times["reference"], batch_size)
        result.update({f"reference_{k}": v for k, v in ref.items()})
        result["overhead_ratio"] = result["images_per_s"] / ref["images_per_s"]
    result.update(_costs(exp, compiled, result["step_time_median_s"], batch_size, mode))
    if device.platform != "cpu" and device.memory_stats():
        result["device_peak_bytes"] = device.memory_stats().get("peak_bytes_in_use")
    return result


def _reference(trainer: Trainer, batch: dict[str, jax.Array]):
    """`reference_train_step` for `trainer` as a runner `(fn, carry)`, and its compile time."""
    exp = trainer.experiment
    sharding = trainer.state_sharding
    replicated = jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec())
    step = jax.jit(
        functools.partial(reference_train_step, model=exp.model, tx=trainer.tx),
        in_shardings=(sharding.params, sharding.batch_stats, sharding.opt_state,
                      exp.batch_sharding, exp.batch_sharding, replicated),
        out_shardings=(sharding.params, sharding.batch_stats, sharding.opt_state, replicated),
        donate_argnums=(0, 1, 2),
    )
    _, height, width, channels = exp.input_shape
    targets = {k: v for k, v in batch.items() if k != "image"}
    images = jax.device_put(  # Already "normalized": standard normal pixels.
        jax.random.normal(jax.random.PRNGKey(1), (len(batch["image"]), height, width, channels)),
        exp.batch_sharding,
    )  # [B, H, W, C] float32
    rng = jax.device_put(jax.random.PRNGKey(2), replicated)
    state = trainer.init_state()  # Its own copy: each step donates its inputs.
    carry = (state.params, state.batch_stats, state.opt_state)
    compiled, seconds, _ = _compile(step, *carry, images, targets, rng)

    def run(carry):
        *carry, loss = compiled(*carry, images, targets, rng)
        return tuple(carry), loss

    return (run, carry), seconds


def _costs(exp: Experiment, compiled: Any, step_time: float, batch_size: int, mode: str) -> dict:
    """FLOPs (XLA and analytic), achieved TFLOP/s, MFU and memory of one compiled step."""
    device = jax.devices()[0]
    num_devices = exp.mesh.size
    per_device = profiling.compiled_flops(compiled)
    flops = per_device * num_devices if per_device is not None else None
    peak, peak_source = profiling.peak_tflops(device, exp.config.dtype)
    variables = exp.abstract_variables()
    image = jax.ShapeDtypeStruct(exp.input_shape, jnp.float32)  # [1, crop, crop, C]
    forward = profiling.matmul_flops(
        lambda p, b, x: exp.model.apply({"params": p, "batch_stats": b}, x, train=False),
        variables["params"], variables["batch_stats"], image,
    )
    out = {
        "flops_per_step": flops,
        "flops_source": "XLA cost analysis (per device x devices)",
        # Conv + matmul FLOPs of the forward pass, textbook count; a train step
        # is conventionally ~3x that per image (forward + 2x for the backward).
        "analytic_forward_flops_per_image": forward,
        "analytic_flops_per_step": (3 if mode == "train" else 1) * forward * batch_size,
        "achieved_tflops": flops / step_time / 1e12 if flops else None,
        "peak_tflops_per_device": peak, "peak_source": peak_source,
        "mfu": profiling.mfu(flops, step_time, peak, num_devices) if flops and peak else None,
        "memory_per_device": profiling.compiled_memory_bytes(compiled),
    }
    return out


def _benchmark_input(config: ml_collections.ConfigDict, batch_size: int, steps: int, warmup: int):
    """Images/s of the real train loader alone: batches fetched and placed on the devices."""
    iterator = Trainer(Experiment(config)).train_iterator()
    try:
        image_size = jax.block_until_ready(next(iterator))["image"].shape[1]
        for _ in range(warmup):
            jax.block_until_ready(next(iterator))
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            jax.block_until_ready(next(iterator))
            times.append(time.perf_counter() - start)
    finally:
        iterator.close()
    summary = _summary(times, batch_size)
    # Prefetching makes single batches bursty: the rate is over the whole run.
    summary["images_per_s"] = batch_size * steps / sum(times)
    return {"image_size": image_size, **summary}


# The tracker benchmark's synthetic sequence: frames, and objects in every frame.
_TRACK_FRAMES = 64
_TRACK_OBJECTS = 4


def _benchmark_tracker(config: ml_collections.ConfigDict, steps: int, warmup: int):
    """Frames/s of the tracker alone (`config.track`), one `track_sequence` scan per step.

    The sequence: `_TRACK_OBJECTS` boxes moving in straight lines through
    `_TRACK_FRAMES` frames, each detected every frame (score 0.9, random
    unit embeddings), in `config.detect.max_detections` slots.
    """
    if config.task != "tracking":
        raise UserError(f"--track times a tracker; config.task is {config.task!r}.")
    tracker = tracking_task.tracker_config(config)  # Unknown keys: one UserError.
    rng = np.random.default_rng(0)
    slots, dim, size = config.detect.max_detections, config.model.embedding_dim, config.data.image_size
    start = rng.uniform(0, size / 2, (_TRACK_OBJECTS, 2))  # [K, 2] top-left corners
    velocity = rng.uniform(-2, 2, (_TRACK_OBJECTS, 2))  # [K, 2] pixels per frame
    corners = start + velocity * np.arange(_TRACK_FRAMES)[:, None, None]  # [F, K, 2]
    boxes = np.zeros((_TRACK_FRAMES, slots, 4), np.float32)
    boxes[:, :_TRACK_OBJECTS] = np.concatenate([corners, corners + size / 8], axis=-1)
    valid = np.zeros((_TRACK_FRAMES, slots), bool)
    valid[:, :_TRACK_OBJECTS] = True
    embeddings = rng.normal(size=(_TRACK_OBJECTS, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    detections = {
        "boxes": boxes, "scores": np.where(valid, 0.9, 0.0).astype(np.float32), "valid": valid,
        "embeddings": np.zeros((_TRACK_FRAMES, slots, dim), np.float32),
    }
    detections["embeddings"][:, :_TRACK_OBJECTS] = embeddings
    jitted = jax.jit(functools.partial(tracking.track_sequence, config=tracker))
    compiled, compile_s, lower_s = _compile(jitted, detections)
    times = _time_alternately({"ours": (lambda c: (c, compiled(detections)), None)}, steps, warmup)
    summary = _summary(times["ours"], _TRACK_FRAMES)
    summary["frames_per_s"] = summary.pop("images_per_s")
    return {"compile_s": compile_s, "lower_s": lower_s, "association": tracker.association,
            "frames": _TRACK_FRAMES, "max_tracks": tracker.max_tracks, "detection_slots": slots,
            **summary}


def format_table(result: dict[str, Any]) -> str:
    """The measurements as aligned `name  value` lines."""

    def fmt(value):
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    rows = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", fmt(v)) for k, v in value.items()]
        else:
            rows.append((key, fmt(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
