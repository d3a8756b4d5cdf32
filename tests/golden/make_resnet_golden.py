"""Writes tests/golden/resnet_torchvision.npz: torchvision ResNet logits for seeded weights.

Run once (torch and torchvision needed only here):
`python tests/golden/make_resnet_golden.py`.

The weights are not stored: `random_state_dict` draws every entry of a
torchvision ResNet state dict from a seeded NumPy generator, and
`tests/test_weights.py` imports it to draw the same dict without torch. So
are the inputs (`random_input`). The file holds, per model in `CASES`, its
class count and state-dict seed and, per input, the seed, the NCHW shape and
torchvision's float32 logits (eval mode). Generated with torch 2.14.1,
torchvision 0.29.1, numpy 2.4.6 (CPU). The script first checks
`state_dict_shapes` against torchvision's `state_dict()` (keys, order,
shapes) for all five ResNets.
"""

import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resnet_torchvision.npz")

# torchvision's ResNets: blocks per stage, bottleneck blocks or not.
ARCHITECTURES = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
    "resnet152": ((3, 8, 36, 3), True),
}

# model -> (num_classes, state-dict seed, [(input seed, NCHW shape), ...]).
CASES = {
    "resnet18": (10, 18, [(1, (2, 3, 160, 160)), (2, (1, 3, 97, 131))]),
    "resnet50": (1000, 50, [(3, (2, 3, 160, 160)), (4, (1, 3, 97, 131))]),
}


def state_dict_shapes(model_name: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvision's `resnet*(num_classes=...).state_dict()`, in its order."""
    stage_sizes, bottleneck = ARCHITECTURES[model_name]
    shapes = {}

    def conv(key, out_channels, in_channels, size):
        shapes[f"{key}.weight"] = (out_channels, in_channels, size, size)  # OIHW

    def bn(key, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{name}"] = (channels,)
        shapes[f"{key}.num_batches_tracked"] = ()

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    expansion = 4 if bottleneck else 1
    in_channels = 64
    for i, num_blocks in enumerate(stage_sizes):
        planes = 64 * 2**i
        for j in range(num_blocks):
            key = f"layer{i + 1}.{j}"
            if bottleneck:
                convs = [(planes, in_channels, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, in_channels, 3), (planes, planes, 3)]
            for k, (out_channels, block_in, size) in enumerate(convs, start=1):
                conv(f"{key}.conv{k}", out_channels, block_in, size)
                bn(f"{key}.bn{k}", out_channels)
            if j == 0 and (i > 0 or in_channels != planes * expansion):
                conv(f"{key}.downsample.0", planes * expansion, in_channels, 1)
                bn(f"{key}.downsample.1", planes * expansion)
            in_channels = planes * expansion
    shapes["fc.weight"] = (num_classes, in_channels)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_state_dict(model_name: str, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """A torchvision ResNet state dict (`state_dict_shapes`) of seeded random values.

    Convs ~ N(0, 2 / fan_out) (torchvision's init); BatchNorm weight ~ U(0.5, 1.5)
    (U(0.1, 0.4) for a block's last one, so the residual sums stay O(1)), bias
    and running mean ~ N(0, 0.1^2), running var ~ U(0.5, 1.5); fc weight ~
    N(0, 1 / in_features). `num_batches_tracked` (int64) is included, as torch saves it.
    """
    last_bn = ".bn3." if ARCHITECTURES[model_name][1] else ".bn2."
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in state_dict_shapes(model_name, num_classes).items():
        if key.endswith(".num_batches_tracked"):
            state[key] = np.array(0, np.int64)
            continue
        if len(shape) == 4:
            value = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape)
        elif key == "fc.weight":
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
        elif key.endswith(".weight"):
            value = rng.uniform(0.1, 0.4, shape) if last_bn in key else rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, running_mean
            value = rng.normal(0.0, 0.1, shape)
        state[key] = value.astype(np.float32)
    return state


def random_input(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Seeded N(0, 1) float32 images, NCHW."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def main():
    import torch
    import torchvision

    for name in ARCHITECTURES:
        theirs = getattr(torchvision.models, name)(weights=None, num_classes=7).state_dict()
        ours = state_dict_shapes(name, 7)
        assert [(k, tuple(v.shape)) for k, v in theirs.items()] == list(ours.items()), name

    out = {}
    for name, (num_classes, seed, inputs) in CASES.items():
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        state = random_state_dict(name, num_classes, seed)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        model.eval()
        out[f"{name}_num_classes"] = np.array(num_classes)
        out[f"{name}_seed"] = np.array(seed)
        for i, (input_seed, shape) in enumerate(inputs):
            with torch.no_grad():
                logits = model(torch.from_numpy(random_input(input_seed, shape)))
            out[f"{name}_input{i}_seed"] = np.array(input_seed)
            out[f"{name}_input{i}_shape"] = np.array(shape)
            out[f"{name}_input{i}_logits"] = logits.numpy().astype(np.float32)
            print(f"{name} {shape}: |logits| max {np.abs(logits.numpy()).max():.3g}")
    np.savez_compressed(OUT, **out)
    print(f"Wrote {OUT} (torch {torch.__version__}, torchvision {torchvision.__version__}).")


if __name__ == "__main__":
    main()
