"""Trained models out: serialized StableHLO (`jax.export`) for any batch size.

`export_stablehlo` turns an experiment's inference into a `jax.export.Exported`
that takes exactly what an eval batch holds, uint8 images `[b, H, W, C]` with a
symbolic batch size `b`, and returns a dict of arrays:

  classification  decoded images `[b, S, S, C]`: S = config.data.resize_size
                  (host `data.ClassificationDecode`: shorter side to S, center
                  square), or the dataset's own fixed size. The center crop to
                  config.augment.crop_size and the normalization are inside.
                  Returns "logits" float32 `[b, K]`.
  detection       letterboxed canvases `[b, S, S, C]` (`data.letterbox`, S =
                  config.data.image_size). The normalization, the detector and
                  its post-processing (config.detect) are inside. Returns
                  `tasks.detection.predict`'s padded "boxes" float32 `[b, D, 4]`
                  (xyxy canvas pixels), "scores" `[b, D]`, "labels" int32
                  `[b, D]`, "valid" bool `[b, D]` (Mask R-CNN adds "masks").

The variables are constants of the module, so the file holds the whole model:
4 bytes per parameter (2 with config.dtype bfloat16, whose casts fold into the
constants), 65 MB for coco_fcos_r50_fpn. It is lowered for both CPU and CUDA
(`PLATFORMS`; `lax.platform_dependent` code keeps both branches), so a file
written on a CPU machine also runs on a GPU. `save` writes it with a JSON
sidecar `<path>.json` (input, outputs, class names, config, checkpoint step);
`load_stablehlo` reads it back:

  exported = export.load_stablehlo("model.stablehlo")
  outputs = exported.call(images)  # uint8 [b, H, W, C] -> {"logits": [b, K]}
"""

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxvision import experiment
from jaxvision.errors import UserError
from jaxvision.tasks import classification, detection

PLATFORMS = ("cpu", "cuda")  # Lowered for both; the runtime picks its own.
SUFFIX = ".stablehlo"


def _check_task(exp: experiment.Experiment) -> None:
    if exp.config.task not in ("classification", "detection"):
        raise UserError(f"Only classifiers and detectors can be exported, not config.task "
                        f"{exp.config.task!r}; pass a classification or detection config.")


def image_shape(exp: experiment.Experiment) -> tuple[int, int, int]:
    """`(H, W, C)` of one image of an eval batch: what the exported function takes.

    Raises:
      UserError: a task other than classification or detection, or a
        classification dataset of varying image size without
        config.data.resize_size.
    """
    _check_task(exp)
    config = exp.config
    if config.task == "detection":
        return exp.input_shape[1:]  # The canvas (1, S, S, C).
    size = config.data.resize_size
    if size is not None:
        return (size, size, exp.info.channels)
    if exp.info.image_shape is None:
        raise UserError(f"Images of {config.data.name!r} vary in size; set "
                        "config.data.resize_size to the size the model was evaluated at.")
    return exp.info.image_shape


def inference_fn(
    exp: experiment.Experiment, variables: dict[str, Any]
) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """uint8 images `[b, H, W, C]` -> the task's outputs (module docstring), `variables` closed over.

    The variables are fetched to the host first, so they become constants of
    the exported module on no particular mesh.
    """
    _check_task(exp)
    variables = jax.device_get(variables)
    config, model = exp.config, exp.model
    if config.task == "classification":
        return lambda images: {
            "logits": classification.predict(variables, images, model=model, config=config)
        }
    return lambda images: detection.predict(variables, images, model=model, config=config)


def export_stablehlo(
    exp: experiment.Experiment, variables: dict[str, Any]
) -> jax.export.Exported:
    """`inference_fn` exported for uint8 `[b, H, W, C]` images of any batch size `b`, on `PLATFORMS`."""
    (batch,) = jax.export.symbolic_shape("b")
    images = jax.ShapeDtypeStruct((batch, *image_shape(exp)), jnp.uint8)
    return jax.export.export(jax.jit(inference_fn(exp, variables)), platforms=PLATFORMS)(images)


def check_path(path: str) -> None:
    """Raises a UserError unless `path` names a format this module writes."""
    suffix = os.path.splitext(path)[1]
    if suffix == ".onnx":
        raise UserError(
            "ONNX export is not available yet (jax2onnx pins an older orbax-checkpoint and "
            "does not convert jaxvision's ResNets and detectors; see README.md, \"Export\"); "
            f"pass an output path ending in {SUFFIX} (serialized StableHLO).")
    if suffix != SUFFIX:
        raise UserError(f"Cannot tell the export format from {path!r}; pass an output path "
                        f"ending in {SUFFIX} (serialized StableHLO, jax.export).")


def metadata(
    exported: jax.export.Exported, exp: experiment.Experiment, step: int, config_name: str
) -> dict[str, Any]:
    """The sidecar: what the exported function takes and returns, and where it came from."""

    def spec(aval: Any) -> dict[str, Any]:  # A symbolic dimension is its name, "b".
        shape = [d if isinstance(d, int) else str(d) for d in aval.shape]
        return {"shape": shape, "dtype": str(aval.dtype)}

    config = exp.config
    size = image_shape(exp)[0]
    if config.task == "detection":
        prepare = f"jaxvision.data.letterbox(image, {size})"
    elif config.data.resize_size is not None:
        prepare = f"jaxvision.data.decode.resize_and_center_crop(image, {size})"
    else:
        prepare = "none: the dataset's images as they are"
    outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
    return {
        "format": "jax.export serialized StableHLO; jax.export.deserialize(bytes).call(images)",
        "platforms": list(exported.platforms),
        "config": config_name,
        "checkpoint_step": step,
        "task": config.task,
        "model": config.model.to_dict(),
        "dataset": config.data.name,
        "input": {"name": "images", **spec(exported.in_avals[0]), "host_preprocessing": prepare},
        "outputs": {name: spec(aval) for name, aval in outputs.items()},
        "class_names": list(exp.info.class_names),
    }


def save(path: str, exported: jax.export.Exported, sidecar: dict[str, Any]) -> None:
    """Writes `exported` serialized to `path` and `sidecar` to `path + ".json"`.

    The parent folder is created when missing.

    Raises:
      UserError: a path of another format, or one that cannot be written.
    """
    check_path(path)
    blob = exported.serialize()
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
        with open(path + ".json", "w") as f:
            json.dump(sidecar, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise UserError(f"Cannot write {path!r} ({e.strerror}); pass a writable path.") from e


def load_stablehlo(path: str) -> jax.export.Exported:
    """The `jax.export.Exported` that `save` wrote to `path`; call it with `.call(images)`.

    Raises:
      UserError: the file cannot be read or is not a serialized jax.export module.
    """
    try:
        with open(path, "rb") as f:
            blob = bytearray(f.read())
    except OSError as e:
        raise UserError(f"Cannot read {path!r} ({e.strerror}); pass a file written by "
                        "scripts/export.py.") from e
    try:
        return jax.export.deserialize(blob)
    except Exception as e:  # A flatbuffer has no checksum: bad bytes fail anywhere.
        raise UserError(f"{path!r} is not a serialized jax.export module ({type(e).__name__}); "
                        "pass a file written by scripts/export.py.") from e
