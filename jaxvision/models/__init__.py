"""Models by name: `get_model("resnet50", num_classes=1000)`, `get_model("fcos", ...)`."""

from collections.abc import Callable
from functools import partial

import flax.linen as nn

from jaxvision.errors import UserError
from jaxvision.models.cnn import CNN
from jaxvision.models.embedding import EmbeddingHead, Recognizer
from jaxvision.models.faster_rcnn import FasterRCNN
from jaxvision.models.fcos import FCOS
from jaxvision.models.fpn import FPN
from jaxvision.models.jde import JDE
from jaxvision.models.resnet import (
    RESNET_DEPTHS,
    BasicBlock,
    BottleneckBlock,
    ResNet,
    ResNetBackbone,
    resnet_backbone,
)
from jaxvision.models.retinanet import RetinaNet

# name -> constructor; the keyword arguments of `get_model` go to the constructor.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": CNN,
    **{
        name: partial(ResNet, stage_sizes=stage_sizes, block_cls=block_cls)
        for name, (stage_sizes, block_cls) in RESNET_DEPTHS.items()
    },
    # Detectors: backbone, FPN and head are fields (backbone="resnet50", ...).
    "fcos": FCOS,
    "retinanet": RetinaNet,
    "faster_rcnn": FasterRCNN,
    "mask_rcnn": partial(FasterRCNN, with_masks=True),
    # Recognition: embeddings with a margin head (backbone="resnet50", margin="arcface", ...).
    "recognizer": Recognizer,
    # Tracking: FCOS plus a per-location embedding trained on identities (num_identities=...).
    "jde": JDE,
}


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model `name` with fields `kwargs` (e.g. num_classes=10)."""
    if name not in MODELS:
        raise UserError(
            f"Unknown model {name!r}; use one of {', '.join(sorted(MODELS))}."
        )
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise UserError(
            f"Cannot build model {name!r} from arguments {sorted(kwargs)} ({e}); "
            "pass exactly its fields, including num_classes."
        ) from e


__all__ = [
    "CNN",
    "FCOS",
    "FPN",
    "JDE",
    "MODELS",
    "RESNET_DEPTHS",
    "BasicBlock",
    "BottleneckBlock",
    "EmbeddingHead",
    "FasterRCNN",
    "Recognizer",
    "ResNet",
    "ResNetBackbone",
    "RetinaNet",
    "get_model",
    "resnet_backbone",
]
