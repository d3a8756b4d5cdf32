"""What the torchvision peer scripts share: flags, set-up, optimizer, timing loop, JSON.

A peer times the model of a jaxvision config built in torch/torchvision, the
way PyTorch is fastest when used as documented, so that `scripts/benchmark.py`
and the peer can be read side by side:

  python benchmarks/torchvision_classification.py --config configs/imagenet_resnet50.py \
      --batch_size 256 --device cuda
  python benchmarks/torchvision_detection.py --config configs/coco_fcos_r50_fpn.py --compile

Each script defines a `workload(setup) -> Workload` (the torch model, a
synthetic batch made on the device once, its loss and its forward pass) and
calls `run(workload, task)`. Everything else is here:

- flags: `--config FILE[:variant]` and `--config.KEY=VALUE` (config_flags and
  `jaxvision.cli`, as in scripts/), `--batch_size`, `--dtype`, `--image_size`
  (applied by `jaxvision.benchmark.override`, as jaxvision's benchmark does),
  `--mode train|eval`, `--device cpu|cuda`, `--compile`, `--[no]channels_last`,
  `--warmup`, `--steps`, `--json`. They are defined by `run`, so importing
  this module (tests do) defines no flags.
- fairness: channels_last model and inputs on CUDA (on a CPU, contiguous
  NCHW is much faster for these models; `--channels_last` forces it); autocast to the config's compute
  dtype (bfloat16, or float16 with a GradScaler as jaxvision's dynamic loss
  scale; float32: no autocast); on CUDA cudnn.benchmark and TF32 matmuls and
  convolutions (JAX's float32 default on GPUs); fused SGD/AdamW.
- the optimizer of `config.optimizer` (`make_optimizer`), and gradient
  clipping when `grad_clip_norm > 0`.
- timing (`run_benchmark`): `warmup` untimed steps, then `steps` timed ones,
  each followed by `torch.cuda.synchronize()` on CUDA. The first step is also
  reported alone (`first_step_s`; with `--compile` it holds the compilation),
  and `compile_s` = first step - median step.
- the result: a one-line summary, then one JSON object (`--json PATH`, else
  the last stdout line); its keys are those of `run_benchmark`.

jaxvision is used only for configs, dataset info and the model's fields
(`jaxvision.models.get_model` builds the Flax module's dataclass without
running it); `run` keeps JAX on the CPU, so it never reserves GPU memory.
"""

import dataclasses
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import torch
import torchvision
from absl import flags
from ml_collections import config_flags
from torch import nn

from jaxvision import benchmark, cli, data, experiment, models
from jaxvision.errors import UserError

FLAGS = flags.FLAGS

# config.dtype -> autocast dtype (None: plain float32).
AMP_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a peer script needs to build its workload.

    Attributes:
      config: the config, with the command line's overrides.
      info: the dataset's classes and image shape.
      spec: the jaxvision Flax module of `config.model` (its fields; never run).
      device: where the model and the batch live.
      memory_format: `torch.channels_last` or `torch.contiguous_format`.
      batch_size: `config.batch_size` (train) or `config.eval_batch_size` (eval).
    """

    config: ml_collections.ConfigDict
    info: data.DatasetInfo
    spec: Any  # A flax.linen.Module.
    device: torch.device
    memory_format: torch.memory_format
    batch_size: int


@dataclasses.dataclass(frozen=True)
class Workload:
    """A peer's model and batch, and how to run them.

    Attributes:
      model: the torch model (`run_benchmark` moves it to the device and memory format).
      batch: the synthetic inputs, on the device.
      loss: `(model, batch) -> scalar loss` of a train step (model in train mode).
      forward: `(model, batch) -> outputs` of an eval step (model in eval mode).
      fields: what names the model in the JSON (`{"model": ..., "backbone": ...}`).
      image_size: the side of the square input images.
    """

    model: nn.Module
    batch: Any
    loss: Callable[[nn.Module, Any], torch.Tensor]
    forward: Callable[[nn.Module, Any], Any]
    fields: dict[str, Any]
    image_size: int


def resnet(
    name: str, *, num_classes: int = 1000, width: int = 64, in_channels: int = 3,
    small_inputs: bool = False, zero_init_residual: bool = False,
) -> torchvision.models.ResNet:
    """`torchvision.models.<name>` with jaxvision's `ResNetBackbone` fields.

    torchvision's ResNets are 64 channels wide with an RGB 7x7 stem; where
    `width`, `in_channels` or `small_inputs` (3x3 stride-1 stem, no max pool)
    differ, the stem, the four stages and the classifier are rebuilt with
    torchvision's own `_make_layer` at jaxvision's widths.
    """
    model = getattr(torchvision.models, name)(
        num_classes=num_classes, zero_init_residual=zero_init_residual
    )
    if (width, in_channels, small_inputs) == (64, 3, False):
        return model
    block = type(model.layer1[0])  # BasicBlock or Bottleneck
    depths = [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)]
    kernel, stride, padding = (3, 1, 1) if small_inputs else (7, 2, 3)
    model.conv1 = nn.Conv2d(in_channels, width, kernel, stride, padding, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    if small_inputs:
        model.maxpool = nn.Identity()
    model.inplanes = width  # `_make_layer` reads and advances it.
    for i, depth in enumerate(depths):
        stage = model._make_layer(block, width * 2**i, depth, stride=1 if i == 0 else 2)
        setattr(model, f"layer{i + 1}", stage)
    model.fc = nn.Linear(8 * width * block.expansion, num_classes)
    return model


def make_optimizer(model: nn.Module, opt: ml_collections.ConfigDict) -> torch.optim.Optimizer:
    """`config.optimizer` ("sgd" or "adamw") over `model`'s trainable parameters.

    Weight decay applies to weights with more than one dimension (conv and
    linear kernels), not to biases or norm parameters: jaxvision's
    `optim.decay_mask`. SGD adds it to the gradient before momentum and AdamW
    decouples it, in torch as in optax. The learning rate is the config's
    peak rate (a schedule does not change the speed).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": opt.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    # fused: one kernel for all parameters (CUDA and CPU), PyTorch's fastest update.
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups, lr=opt.learning_rate, momentum=opt.momentum, nesterov=opt.nesterov,
            fused=True,
        )
    if opt.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=opt.learning_rate, betas=(opt.b1, opt.b2), fused=True
        )
    raise UserError(f"Unknown config.optimizer.name {opt.name!r}; use 'sgd' or 'adamw'.")


def _device(name: str | None) -> torch.device:
    """`name` ("cpu", "cuda"), or cuda when available, else cpu; CUDA's fast paths on."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device=cuda but torch finds no CUDA device; install a CUDA build of "
                "torch or use --device cpu."
            )
        torch.backends.cudnn.benchmark = True
        # JAX runs float32 matmuls and convolutions on TF32 tensor cores by default.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def _check(config: ml_collections.ConfigDict, task: str, mode: str, steps: int, warmup: int):
    """Raises `UserError` for a config or setting the peer cannot time."""
    if config.task != task:
        script = f"torchvision_{config.task}.py"
        raise UserError(
            f"The config is a {config.task!r} config; time it with benchmarks/{script}."
        )
    if config.dtype not in AMP_DTYPES:
        raise UserError(
            f"config.dtype={config.dtype!r} has no torch counterpart here; use one of "
            f"{', '.join(map(repr, AMP_DTYPES))}."
        )
    if mode not in ("train", "eval"):
        raise UserError(f"Unknown mode {mode!r}; use 'train' or 'eval'.")
    benchmark.check_steps(steps, warmup)


def _train_step(work: Workload, model: nn.Module, setup: Setup) -> Callable[[], None]:
    """Forward + loss, backward, clipping, optimizer update, gradients dropped."""
    work.model.train()
    opt = setup.config.optimizer
    optimizer = make_optimizer(work.model, opt)
    amp_dtype = AMP_DTYPES[setup.config.dtype]
    # float16 only: loss scaling, as jaxvision's dynamic scale (otherwise a no-op).
    scaler = torch.amp.GradScaler(setup.device.type, enabled=amp_dtype == torch.float16)
    clip = opt.get("grad_clip_norm", 0.0)

    def step():
        with torch.autocast(setup.device.type, amp_dtype, enabled=amp_dtype is not None):
            loss = work.loss(model, work.batch)
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(work.model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def _eval_step(work: Workload, model: nn.Module, setup: Setup) -> Callable[[], None]:
    """The forward pass in eval mode, under `torch.inference_mode`."""
    work.model.eval()
    amp_dtype = AMP_DTYPES[setup.config.dtype]

    def step():
        with torch.inference_mode(), torch.autocast(
            setup.device.type, amp_dtype, enabled=amp_dtype is not None
        ):
            work.forward(model, work.batch)

    return step


def _time(
    step: Callable[[], None], device: torch.device, steps: int, warmup: int
) -> tuple[float, list[float]]:
    """Runs `warmup` + `steps` steps; the first step's seconds and the timed steps'."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    first, times = None, []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        sync()
        seconds = time.perf_counter() - start
        first = seconds if first is None else first
        if i >= warmup:
            times.append(seconds)
    return first, times


def _peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes and where they come from: torch's CUDA allocator, else the process's RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024), "process peak RSS"


def run_benchmark(
    config: ml_collections.ConfigDict, workload: Callable[[Setup], Workload], task: str, *,
    mode: str = "train", device: str | None = None, compile_model: bool = False,
    channels_last: bool | None = None, steps: int = 20, warmup: int = 3,
) -> dict[str, Any]:
    """Times `steps` steps (after `warmup`) of the config's model in torch.

    Args:
      config: the experiment config (batch size, dtype, image size as set there).
      workload: the peer script's model and batch builder.
      task: the `config.task` the workload handles.
      mode: "train" (forward, loss, backward, update) or "eval" (forward).
      device: "cpu" or "cuda"; None: cuda if available.
      compile_model: `torch.compile` the model (default mode).
      channels_last: the channels_last memory format for the model and inputs;
        None: on CUDA only (on a CPU it made the FCOS train step 7x slower here,
        docs/performance.md).
      steps: timed steps.
      warmup: untimed steps before them.

    Returns:
      A JSON-able dict: framework, torch_version, torchvision_version, device,
      platform, task, mode, compiled, channels_last, model (and backbone),
      batch_size, image_size, dtype, amp, num_threads, steps, warmup,
      param_count, then first_step_s, compile_s, step_time_median_s,
      step_time_min_s, step_time_max_s, images_per_s, peak_memory_bytes and
      peak_memory_source. If `torch.compile` fails, an "error" message
      replaces the timings.

    Raises:
      UserError: a config or setting the peer cannot time, or out of GPU memory.
    """
    _check(config, task, mode, steps, warmup)
    setup_device = _device(device)
    if channels_last is None:
        channels_last = setup_device.type == "cuda"
    info = benchmark.synthetic_info(config)  # COCO's shape without COCO, as jaxvision's.
    fields = experiment.model_fields(config)
    setup = Setup(
        config=config, info=info,
        spec=models.get_model(config.model.name, num_classes=info.num_classes, **fields),
        device=setup_device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
        batch_size=config.batch_size if mode == "train" else config.eval_batch_size,
    )
    work = workload(setup)
    work.model.to(device=setup.device, memory_format=setup.memory_format)
    model = torch.compile(work.model) if compile_model else work.model
    amp = AMP_DTYPES[config.dtype] is not None
    result = {
        "framework": "torchvision",
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "device": "cpu" if setup.device.type == "cpu" else torch.cuda.get_device_name(setup.device),
        "platform": "cpu" if setup.device.type == "cpu" else "gpu",
        "task": task, "mode": mode, "compiled": compile_model, "channels_last": channels_last,
        **work.fields,
        "batch_size": setup.batch_size, "image_size": work.image_size,
        "dtype": config.dtype, "amp": amp, "num_threads": torch.get_num_threads(),
        "steps": steps, "warmup": warmup,
        "param_count": sum(p.numel() for p in work.model.parameters()),
    }
    step = (_train_step if mode == "train" else _eval_step)(work, model, setup)
    try:
        first, times = _time(step, setup.device, steps, warmup)
    except torch.cuda.OutOfMemoryError as e:
        raise UserError(
            f"Out of GPU memory at batch size {setup.batch_size}; lower --batch_size."
        ) from e
    except Exception as e:  # torch.compile compiles, and fails, inside the first call.
        if not compile_model:
            raise
        message = (str(e).strip().splitlines() or [""])[0]
        return {**result, "error": f"torch.compile failed: {type(e).__name__}: {message}"}
    median = statistics.median(times)
    result.update({
        "first_step_s": first,
        "compile_s": first - median,  # Compilation and first-call overhead.
        "step_time_median_s": median,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "images_per_s": setup.batch_size / median,
    })
    result["peak_memory_bytes"], result["peak_memory_source"] = _peak_memory(setup.device)
    return result


def summary(result: dict[str, Any]) -> str:
    """`run_benchmark`'s result in one line: what ran, and how fast."""
    model = " ".join(str(result[k]) for k in ("model", "backbone") if k in result)
    how = ", ".join([
        result["dtype"] + (" autocast" if result["amp"] else ""),
        "channels_last" if result["channels_last"] else "contiguous",
        "torch.compile" if result["compiled"] else "eager",
    ])
    return (
        f"torchvision {model} {result['mode']} on {result['device']} "
        f"({result['num_threads']} threads), batch {result['batch_size']} at "
        f"{result['image_size']} px, {how}: {result['images_per_s']:,.1f} img/s "
        f"(median step {result['step_time_median_s']:.4g} s, first step "
        f"{result['first_step_s']:.3g} s), {result['param_count']:,} parameters"
    )


def _define_flags():
    config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
    flags.DEFINE_integer("batch_size", None, "Overrides config.batch_size.")
    flags.DEFINE_string("dtype", None, "Overrides config.dtype (compute dtype).")
    flags.DEFINE_integer(
        "image_size", None,
        "Overrides config.augment.crop_size (classification) or config.data.image_size "
        "(detection).",
    )
    flags.DEFINE_enum("mode", "train", ["train", "eval"], "Time a train or an eval step.")
    flags.DEFINE_enum("device", None, ["cpu", "cuda"], "Default: cuda if available, else cpu.")
    flags.DEFINE_boolean("compile", False, "torch.compile the model (default mode).")
    flags.DEFINE_boolean(
        "channels_last", None,
        "channels_last memory format for the model and its inputs (default: on CUDA only).",
    )
    flags.DEFINE_integer("warmup", 3, "Untimed steps before the timed ones.")
    flags.DEFINE_integer("steps", 20, "Timed steps.")
    flags.DEFINE_string("json", None, "Write the JSON here instead of stdout.")
    flags.mark_flags_as_required(["config"])


def _main(workload: Callable[[Setup], Workload], task: str):
    config = benchmark.override(
        FLAGS.config, batch_size=FLAGS.batch_size, dtype=FLAGS.dtype,
        image_size=FLAGS.image_size,
    )
    result = run_benchmark(
        config, workload, task, mode=FLAGS.mode, device=FLAGS.device,
        compile_model=FLAGS.compile, channels_last=FLAGS.channels_last,
        steps=FLAGS.steps, warmup=FLAGS.warmup,
    )
    if "error" not in result:
        print(summary(result))
    if FLAGS.json:
        benchmark.write_json(result, FLAGS.json)
    else:
        print(json.dumps(result), flush=True)
    if "error" in result:
        raise UserError(f"{result['error']}; run without --compile.")


def run(workload: Callable[[Setup], Workload], task: str):
    """A peer script's entry point: defines and parses the flags, times, reports.

    Args:
      workload: builds the torch model and batch from the `Setup`.
      task: the `config.task` the script handles ("classification", "detection").
    """
    # JAX would reserve most of a GPU's memory on first use; the peer needs none of it.
    jax.config.update("jax_platforms", "cpu")
    _define_flags()
    cli.run(lambda argv: _main(workload, task))
