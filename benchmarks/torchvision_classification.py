"""A classification config's model in torch, timed for the side-by-side with jaxvision.

  python benchmarks/torchvision_classification.py --config configs/imagenet_resnet50.py \
      --batch_size 256 --device cuda
  python benchmarks/torchvision_classification.py --config configs/imagenet_resnet50.py \
      --dtype float32 --batch_size 32 --image_size 128 --steps 10 --warmup 2 --compile
  python benchmarks/torchvision_classification.py --config configs/digits_cnn.py --mode eval

The jaxvision command it answers: `python scripts/benchmark.py --config ...` with
the same overrides. Flags, timing and the JSON are `torch_peer`'s.

Models (`config.model.name`):
- resnet18/34/50/101/152: `torchvision.models.<name>(num_classes=K)`; jaxvision's
  `width`, input channels and `small_inputs` (CIFAR stem) are honoured by
  rebuilding the stem and stages at those widths (`torch_peer.resnet`).
  Parameter counts equal jaxvision's (resnet.py's docstring: torchvision layout).
- cnn: jaxvision/models/cnn.py's `CNN` as an `nn.Sequential` of the same
  layers: per feature a 3x3 conv (pad 1, = "SAME") + ReLU + 2x2 max pool,
  then flatten, dense hidden + ReLU, dropout, dense head. Equal parameter
  counts; the flatten order differs (NCHW vs NHWC), which changes no FLOPs.

The batch: `[B, C, S, S]` standard-normal images (already "normalized", as
jaxvision's `--reference` step; S = `config.augment.crop_size`, C the dataset's
channels) in the peer's memory format, and random labels `[B]` in `[0, K)`;
made on the device once. jaxvision's own train step also crops, flips and
normalizes on the device, which the peer does not. The train loss is
cross-entropy with `config.label_smoothing`.
"""

import torch
import torch_peer
from torch import nn

from jaxvision.errors import UserError
from jaxvision.models import RESNET_DEPTHS


def cnn(spec, in_channels: int, image_size: int) -> nn.Sequential:
    """jaxvision's `CNN` module `spec` (its fields) as torch layers, for `[B, C, S, S]` images."""
    layers, channels, size = [], in_channels, image_size
    for features in spec.features:
        layers += [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, size = features, size // 2  # [B, features, S / 2**(i + 1), ...], rounded down
    return nn.Sequential(
        *layers,
        nn.Flatten(),  # [B, channels * size * size]
        nn.Linear(channels * size * size, spec.hidden), nn.ReLU(),
        nn.Dropout(spec.dropout_rate),
        nn.Linear(spec.hidden, spec.num_classes),  # [B, K]
    )


def workload(setup: torch_peer.Setup) -> torch_peer.Workload:
    """The config's classifier in torch, a random batch, cross-entropy."""
    config, info, spec = setup.config, setup.info, setup.spec
    name, size = config.model.name, config.augment.crop_size
    if name == "cnn":
        model = cnn(spec, info.channels, size)
    elif name in RESNET_DEPTHS:
        model = torch_peer.resnet(
            name, num_classes=info.num_classes, width=spec.width, in_channels=info.channels,
            small_inputs=spec.small_inputs, zero_init_residual=spec.zero_init_residual,
        )
    else:
        raise UserError(
            f"Model {name!r} has no torchvision peer; use cnn or one of {', '.join(RESNET_DEPTHS)}."
        )
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(setup.batch_size, info.channels, size, size, generator=generator)
    labels = torch.randint(0, info.num_classes, (setup.batch_size,), generator=generator)
    batch = (
        images.to(setup.device, memory_format=setup.memory_format),  # [B, C, S, S]
        labels.to(setup.device),  # [B]
    )
    smoothing = config.get("label_smoothing", 0.0)

    def loss(model, batch):
        images, labels = batch
        return nn.functional.cross_entropy(model(images), labels, label_smoothing=smoothing)

    return torch_peer.Workload(
        model=model, batch=batch, loss=loss, forward=lambda model, batch: model(batch[0]),
        fields={"model": name}, image_size=size,
    )


if __name__ == "__main__":
    torch_peer.run(workload, task="classification")
