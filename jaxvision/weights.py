"""Pretrained weights in: torchvision / timm ResNets, and other jaxvision runs.

Two entry points:
- `from_torchvision(source, model_name)`: a torchvision ResNet state dict (a
  dict of arrays, or a `.pth`/`.pt`, `.safetensors` or `.npz` file) as the
  variables of `models.get_model(model_name, num_classes=K)`, K being the
  state dict's `fc` out features. timm's plain ResNets ("resnet50.a1_in1k",
  ...: 7x7 stem, max pool, 1x1 conv downsample) use torchvision's names and
  layout, so their weights read the same way; timm's deep-stem variants
  ("resnet50d", "resnet26t", ...: `conv1.0.weight`, average-pool downsample)
  are other models and are refused with the key that does not fit.
- `initialize_from(spec, variables)`: what the trainer calls after its random
  init, with `spec` "torchvision:PATH", "timm:PATH" or "workdir:PATH" (a
  jaxvision run directory). It returns `variables` with the arrays that fit
  replaced: the ResNet backbone always (an error if it does not fit), a
  classifier head if its class count is the same, and from a workdir every
  other layer whose names and shapes agree (e.g. a detector's FPN and towers).

and, for fine-tuning, what stays fixed: `frozen_mask` (the backbone's stem and
first stages, `config.model.freeze_backbone_stages`, and with
`config.model.frozen_bn` its BatchNorm scales and biases), which the trainer
gives to the optimizer (no update, no weight decay) and to
`stop_frozen_gradients` (no gradient computed).
"""

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jaxvision import models
from jaxvision.checkpoint import Checkpointer, CorruptCheckpoint, describe_error
from jaxvision.errors import UserError
from jaxvision.experiment import init_variables

SPEC_KINDS = ("torchvision", "timm", "workdir")
COLLECTIONS = ("params", "batch_stats")  # What is loaded; other collections keep their init.

# jaxvision module name -> torchvision's (the stage blocks are mapped in `_torch_key`).
_TORCH_MODULES = {
    "stem_conv": "conv1", "stem_bn": "bn1",
    "downsample_conv": "downsample.0", "downsample_bn": "downsample.1",
}
# jaxvision leaf name -> torchvision's (BatchNorm statistics live in "batch_stats").
_TORCH_LEAVES = {
    "kernel": "weight", "scale": "weight", "bias": "bias",
    "mean": "running_mean", "var": "running_var",
}

# safetensors dtype -> NumPy dtype (little-endian, as the format stores them).
_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16,
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}


def from_torchvision(source: str | os.PathLike | Mapping[str, Any],
                     model_name: str) -> dict[str, Any]:
    """A torchvision (or plain timm) ResNet state dict as jaxvision variables.

    Conv weights OIHW -> HWIO kernels, `fc.weight` [K, C] -> the head's kernel
    [C, K], BatchNorm weight/bias -> scale/bias and running mean/var ->
    `batch_stats`; `num_batches_tracked` is dropped. A state dict wrapped as
    {"state_dict": ...} or {"model": ...} and DataParallel's "module." prefix
    are accepted.

    Args:
      source: a dict of arrays (NumPy or torch tensors), or the path of a
        `.pth`/`.pt` (needs torch), `.safetensors` or `.npz` file.
      model_name: a `models.RESNET_DEPTHS` name ("resnet18", ..., "resnet152").

    Returns:
      {"params": ..., "batch_stats": ...}: float32 NumPy arrays with the tree
      of `experiment.init_variables` for `models.get_model(model_name,
      num_classes=K)`, K = the out features of `fc`.

    Raises:
      UserError: an unreadable file, an unknown model name, or a key that is
        missing, unexpected or of the wrong shape (named in the message).
    """
    if model_name not in models.RESNET_DEPTHS:
        raise UserError(f"Unknown ResNet {model_name!r}; use one of "
                        f"{', '.join(models.RESNET_DEPTHS)}.")
    state, what = _read_state_dict(source)
    fc = state.get("fc.weight")
    num_classes = fc.shape[0] if getattr(fc, "ndim", 0) == 2 else 1000
    expected = _resnet_shapes(model_name, num_classes)  # {"params": ..., "batch_stats": ...}

    leaves, treedef = jax.tree_util.tree_flatten_with_path(expected)
    keys = [_torch_key(_names(path)) for path, _ in leaves]
    known = set(keys)
    missing = [key for key in keys if key not in state]
    unexpected = [key for key in state
                  if key not in known and not key.endswith(".num_batches_tracked")]
    if missing or unexpected:
        problems = [f"{kind} key {names[0]!r}" + (f" (and {len(names) - 1} more)"
                                                   if len(names) > 1 else "")
                    for kind, names in (("unexpected", unexpected), ("missing", missing))
                    if names]
        raise UserError(
            f"{what} is not a {model_name} state dict in torchvision's layout: "
            f"{', '.join(problems)}; use the weights of a plain torchvision or timm "
            f"{model_name} (timm's deep-stem variants such as {model_name}d are not supported)."
        )
    arrays = []
    for key, (_, leaf) in zip(keys, leaves, strict=True):
        value = _to_numpy(state[key])
        torch_shape = _torch_shape(leaf.shape)
        if value.shape != torch_shape:
            raise UserError(
                f"{what}: {key} has shape {tuple(value.shape)} but {model_name} needs "
                f"{torch_shape}; pass the model name the weights were saved from."
            )
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif value.ndim == 2:
            value = value.T  # [out, in] -> [in, out]
        arrays.append(np.ascontiguousarray(value, dtype=np.float32))
    return jax.tree_util.tree_unflatten(treedef, arrays)


def initialize_from(spec: str, variables: dict[str, Any]) -> dict[str, Any]:
    """`variables` (a fresh init) with the pretrained arrays of `spec` that fit.

    The trainer calls it once after its random init, e.g.
    `variables = weights.initialize_from(config.model.init_from, variables)`.

    - "torchvision:PATH" / "timm:PATH": a ResNet state dict file
      (`from_torchvision`; the ResNet depth is read from the model's own
      backbone). It fills params["backbone"] and batch_stats["backbone"] of
      any model that has one (a ResNet classifier, FCOS, RetinaNet, Faster /
      Mask R-CNN), and a classifier's params["head"] when its class count is
      the same.
    - "workdir:PATH": the params and BatchNorm statistics of the newest good
      checkpoint in PATH/checkpoints, written by any jaxvision model. Every
      layer (a module's arrays, taken together) whose names and shapes are
      the same in both is copied: fine-tuning a classifier on other classes,
      or a detector from a classifier's backbone or another detector.

    Layers that do not fit keep their init, with one log line naming them
    (for a classifier head: "head re-initialised: checkpoint has 1000
    classes, this model 10"); one line summarises what was loaded. Arrays
    keep the dtype and sharding of `variables`.

    Args:
      spec: "torchvision:PATH", "timm:PATH" or "workdir:PATH".
      variables: {"params": ..., "batch_stats": ...} of the model to train.

    Returns:
      A tree like `variables`.

    Raises:
      UserError: a malformed spec, unreadable weights, a backbone that does
        not fit (named by its first differing array), or nothing that fits.
    """
    kind, _, path = spec.partition(":")
    if kind not in SPEC_KINDS or not path:
        raise UserError(
            f"Cannot read the weights to initialise from, {spec!r}; use 'torchvision:PATH' "
            "or 'timm:PATH' (a ResNet state dict: .pth, .safetensors or .npz) or "
            "'workdir:PATH' (a jaxvision run directory)."
        )
    path = os.path.expanduser(path)
    if kind == "workdir":
        source, step = _read_workdir(path)
        origin = f"{spec} (step {step})"
    else:
        backbone = variables.get("params", {}).get("backbone")
        if backbone is None:
            raise UserError(
                f"{spec} holds ResNet weights, but this model has no ResNet backbone "
                "(params['backbone']); initialise it from a 'workdir:PATH' instead."
            )
        source, origin = from_torchvision(path, _resnet_name(backbone)), spec
    return _load_matching(variables, source, origin)


# ResNet backbone modules by stage: detectron2 counts the stem as stage 1.
def _backbone_stage(module: str) -> int:
    """1 for the stem ("stem_conv", "stem_bn"), k + 1 for "stage{k}_block{j}"."""
    return 1 if module.startswith("stem_") else int(module[len("stage"):].split("_")[0]) + 1


def frozen_mask(params: Any, freeze_backbone_stages: int, frozen_bn: bool) -> Any | None:
    """Which parameters training leaves as they are: a pytree of bools like `params`, or None.

    Args:
      params: the model's params (arrays or shapes), holding its ResNet under "backbone".
      freeze_backbone_stages: k freezes the backbone's stem and its first k - 1
        stages (detectron2's FREEZE_AT: 2 = stem + stage 1; 5 = the whole backbone).
      frozen_bn: also freeze every backbone BatchNorm's scale and bias (with
        the model's `frozen_bn`, its statistics are fixed too: detectron2's FrozenBN).

    Returns:
      None when nothing is frozen.

    Raises:
      UserError: freezing asked of a model without a ResNet backbone, or k outside 0-5.
    """
    if not freeze_backbone_stages and not frozen_bn:
        return None
    if not 0 <= freeze_backbone_stages <= 5:
        raise UserError(
            f"config.model.freeze_backbone_stages={freeze_backbone_stages} is not a ResNet "
            "stage count; use 0 (train all) to 5 (freeze the stem and all four stages)."
        )
    if "backbone" not in params:
        raise UserError(
            "config.model.freeze_backbone_stages and frozen_bn need a model with a ResNet "
            f"backbone (resnet*, detectors); this one has {sorted(params)}: set them to 0 / False."
        )

    def frozen(path: tuple, _) -> bool:
        keys = [getattr(k, "key", None) for k in path]
        if keys[0] != "backbone":
            return False
        stage_frozen = _backbone_stage(keys[1]) <= freeze_backbone_stages
        is_bn = "bn" in keys[-2]  # stem_bn, bn1-bn3, downsample_bn
        return stage_frozen or (frozen_bn and is_bn)

    return jax.tree_util.tree_map_with_path(frozen, params)


def stop_frozen_gradients(loss_fn: Callable, frozen: Any) -> Callable:
    """`loss_fn(params, ...)` with zero gradients for the `frozen` params.

    XLA then skips their weight gradients (and the backward pass through
    frozen stages that nothing before them needs); the optimizer's
    `frozen` mask (`optim.make_optimizer`) keeps weight decay off them.
    """

    def wrapped(params: Any, *args: Any, **kwargs: Any) -> Any:
        params = jax.tree.map(
            lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        return loss_fn(params, *args, **kwargs)

    return wrapped


def _load_matching(variables: dict[str, Any], source: dict[str, Any],
                   origin: str) -> dict[str, Any]:
    """`variables` with every layer that `source` holds with the same names and shapes.

    A layer is the arrays of one module path in every collection (a BatchNorm's
    scale, bias, mean and var), so a layer is loaded whole or not at all.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [_names(path) for path, _ in leaves]
    given = {_names(path): np.asarray(x)
             for path, x in jax.tree_util.tree_flatten_with_path(source)[0]}

    def layer_leaves(tree_paths):  # layer (module path) -> {(collection, leaf): path}
        layers = {}
        for p in tree_paths:
            if p[0] in COLLECTIONS:
                layers.setdefault(p[1:-1], {})[p[0], p[-1]] = p
        return layers

    wanted, offered = layer_leaves(paths), layer_leaves(given)
    shapes = {p: tuple(leaf.shape) for p, (_, leaf) in zip(paths, leaves, strict=True)}

    def mismatch(layer) -> str | None:  # How `source` differs at `layer`; None: it fits.
        theirs = offered.get(layer, {})
        for key, p in wanted[layer].items():
            if key not in theirs:
                return f"{'/'.join(p)} is missing there"
            if given[theirs[key]].shape != shapes[p]:
                return (f"{'/'.join(p)} is {tuple(given[theirs[key]].shape)} there "
                        f"and {shapes[p]} here")
        extra = sorted(set(theirs) - set(wanted[layer]))
        return f"{'/'.join(theirs[extra[0]])} is extra there" if extra else None

    kept = []
    for layer in wanted:
        if (why := mismatch(layer)) is None:
            continue
        if layer[:1] == ("backbone",):
            raise UserError(
                f"{origin} does not fit this model's backbone: {why}; use weights of the "
                "same ResNet (depth, width and stem)."
            )
        kept.append(layer)
    loaded = {p for layer, names in wanted.items() if layer not in kept for p in names.values()}
    if not loaded:
        raise UserError(
            f"Nothing in {origin} fits this model (no layer with the same names and shapes); "
            "initialise it from weights of the same architecture."
        )

    new = []
    for p, (_, leaf) in zip(paths, leaves, strict=True):
        new.append(_like(given[p], leaf) if p in loaded else leaf)

    theirs = given.get(("params", "head", "kernel"))
    if (set(variables["params"]) == {"backbone", "head"} and kept == [("head",)]
            and theirs is not None and theirs.ndim == 2):  # A classifier of other classes.
        logging.info("head re-initialised: checkpoint has %d classes, this model %d",
                     theirs.shape[-1], shapes["params", "head", "kernel"][-1])
    elif kept:
        logging.info("Kept their initialisation (not in %s, or other shapes): %s",
                     origin, _describe_layers(kept, wanted))
    tops = dict.fromkeys(p[1] for p in paths if p in loaded)  # In the model's order.
    logging.info("Initialised %d of %d arrays from %s: %s.", len(loaded), len(paths),
                 origin, ", ".join(tops))
    return jax.tree_util.tree_unflatten(treedef, new)


def _describe_layers(layers: list[tuple[str, ...]], every: dict) -> str:
    """Layer paths, a top-level module named once when all of its layers are in `layers`."""
    chosen, out = set(layers), []
    for layer in layers:
        top = layer[:1]
        whole = all(other in chosen for other in every if other[:1] == top)
        name = "/".join(top if whole else layer) or "the model's own arrays"
        if name not in out:
            out.append(name)
    return ", ".join(out)


def _like(value: np.ndarray, leaf: Any) -> Any:
    """`value` with the dtype of `leaf`, placed like it (any sharding, any number of processes)."""
    value = np.asarray(value, dtype=leaf.dtype)
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return value
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _names(path: tuple) -> tuple[str, ...]:
    """A pytree key path as names: ("params", "backbone", "stem_conv", "kernel")."""
    return tuple(str(getattr(k, "key", k)) for k in path)


def _resnet_shapes(model_name: str, num_classes: int) -> dict[str, Any]:
    """Abstract variables of the ResNet classifier (traced, not initialised)."""
    model = models.get_model(model_name, num_classes=num_classes)
    init = functools.partial(init_variables, model=model, input_shape=(1, 224, 224, 3))
    return jax.eval_shape(init, jax.random.PRNGKey(0))


def _resnet_name(backbone: Mapping[str, Any]) -> str:
    """The `RESNET_DEPTHS` name of a `ResNetBackbone`'s params, from its blocks."""
    stage_sizes = tuple(sum(name.startswith(f"stage{i}_block") for name in backbone)
                        for i in range(1, 5))
    bottleneck = "conv3" in backbone.get("stage1_block0", {})
    for name, (sizes, block) in models.RESNET_DEPTHS.items():
        if tuple(sizes) == stage_sizes and (block is models.BottleneckBlock) == bottleneck:
            return name
    raise UserError(
        f"This model's backbone ({stage_sizes} blocks) is none of "
        f"{', '.join(models.RESNET_DEPTHS)}; torchvision weights fit only those."
    )


def _torch_key(path: tuple[str, ...]) -> str:
    """torchvision's state-dict key of a jaxvision ResNet classifier's variable path."""
    _, top, *modules, leaf = path
    if top == "head":
        return f"fc.{_TORCH_LEAVES[leaf]}"
    names = []
    for module in modules:
        if match := re.fullmatch(r"stage(\d+)_block(\d+)", module):
            names.append(f"layer{match[1]}.{match[2]}")
        else:
            names.append(_TORCH_MODULES.get(module, module))  # conv1, bn1, ... as they are.
    return ".".join([*names, _TORCH_LEAVES[leaf]])


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch layout of a jaxvision shape: HWIO -> OIHW, [in, out] -> [out, in]."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))


def _to_numpy(value: Any) -> np.ndarray:
    """A NumPy array of a NumPy array or a torch tensor (bfloat16 ones too), without importing torch."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _read_state_dict(source: str | os.PathLike | Mapping[str, Any]
                     ) -> tuple[dict[str, Any], str]:
    """`(state dict, how to name it in errors)`, unwrapped and without "module." prefixes."""
    if isinstance(source, Mapping):
        state, what = source, "The state dict"
    else:
        path = os.fspath(source)
        state, what = _read_file(path), path
    for key in ("state_dict", "model"):  # Training checkpoints of timm / torchvision's references.
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    return {str(k).removeprefix("module."): v for k, v in state.items()}, what


def _read_file(path: str) -> Mapping[str, Any]:
    """The arrays of a `.pth`/`.pt`, `.safetensors` or `.npz` file, by name."""
    if not os.path.isfile(path):
        raise UserError(f"No weights file at {path}; check the path.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise UserError(
                f"Reading {path} needs PyTorch: pip install torch, or convert it to "
                ".safetensors or .npz where torch is installed."
            ) from None
        read = functools.partial(torch.load, map_location="cpu", weights_only=True)
    elif suffix == ".safetensors":
        read = _read_safetensors
    elif suffix == ".npz":
        read = _read_npz
    else:
        raise UserError(f"Cannot tell the format of {path}; use a .pth/.pt, "
                        ".safetensors or .npz file.")
    try:
        state = read(path)
    except Exception as e:  # Each reader raises its own types for bad files.
        raise UserError(
            f"Cannot read {path} ({describe_error(e)}); pass a state dict file "
            "(torch.save(model.state_dict(), ...), not the whole model)."
        ) from e
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict; "
                        "save model.state_dict() instead.")
    return state


def _read_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """A `.safetensors` file's arrays; floats as float32 (F64/F16/BF16 cast), ints as they are.

    The format: an 8-byte little-endian header size N, N bytes of JSON
    {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": ...},
    then the raw little-endian bytes, offsets counted from the end of the header.
    """
    with open(path, "rb") as f:
        data = f.read()
    size = int.from_bytes(data[:8], "little")
    if 8 + size > len(data):
        raise ValueError(f"header size {size} exceeds the file's {len(data)} bytes")
    header = json.loads(data[8 : 8 + size])
    body = memoryview(data)[8 + size :]
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name} has dtype {info['dtype']}, which is not supported")
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= begin <= end <= len(body) or end - begin != np.prod(shape) * dtype.itemsize:
            raise ValueError(f"the bytes of {name} do not fit its offsets and shape")
        array = np.frombuffer(body[begin:end], dtype).reshape(shape)
        is_float = info["dtype"] in ("F64", "F32", "F16", "BF16")
        arrays[name] = array.astype(np.float32 if is_float else dtype.newbyteorder("="))
    return arrays


def _read_workdir(workdir: str) -> tuple[dict[str, Any], int]:
    """`(variables, step)`: params and BatchNorm statistics of `workdir`'s newest good checkpoint.

    Any jaxvision model's: the arrays are read as saved (their shapes come
    from the checkpoint), as NumPy arrays, and never checked against a config.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise UserError(f"No checkpoints in {directory}; point 'workdir:' at the --workdir "
                        "of a jaxvision training run.")
    ckpt = Checkpointer(directory)
    try:
        step, variables = ckpt.restore_latest(functools.partial(_restore_variables, ckpt), {})
    finally:
        ckpt.close()
    if step is None:
        raise UserError(f"No complete checkpoint in {directory}; point 'workdir:' at a run "
                        "that has saved one.")
    return variables, step


def _restore_variables(ckpt: Checkpointer, step: int) -> dict[str, Any]:
    """Checkpoint `step`'s params and batch_stats, shaped as saved (`Checkpointer.restore_part`)."""
    try:
        saved = ocp.PyTreeCheckpointHandler().metadata(
            epath.Path(ckpt.directory) / str(step) / "state")
    except Exception as e:  # Orbax raises bare Exceptions for unreadable metadata.
        raise CorruptCheckpoint(describe_error(e)) from e
    saved = getattr(saved, "tree", saved)
    abstract = {name: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved[name])
                for name in COLLECTIONS if saved.get(name)}  # No sharding: NumPy arrays.
    return ckpt.restore_part(step, abstract)
