"""Models by name: `get_model("resnet50", num_classes=1000)`."""

from collections.abc import Callable
from functools import partial

import flax.linen as nn

from jaxvision.errors import UserError
from jaxvision.models.cnn import CNN
from jaxvision.models.resnet import BasicBlock, BottleneckBlock, ResNet, ResNetBackbone

# name -> constructor; the keyword arguments of `get_model` go to the constructor.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": CNN,
    "resnet18": partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock),
    "resnet34": partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock),
    "resnet50": partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock),
    "resnet101": partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=BottleneckBlock),
    "resnet152": partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=BottleneckBlock),
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
    "MODELS",
    "BasicBlock",
    "BottleneckBlock",
    "ResNet",
    "ResNetBackbone",
    "get_model",
]
