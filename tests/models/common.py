"""Helpers the model tests share: fast PRNG keys, parameter counts, tiny detector fields."""

import math

import jax

# Detector fields small enough to compile in seconds on a CPU (FCOS, RetinaNet).
TINY = {
    "backbone": "resnet18",
    "backbone_width": 8,
    "fpn_features": 32,
    "head_convs": 2,
    "norm_groups": 8,
}


def key(seed):
    """An rbg PRNG key: XLA:CPU compiles its sampling much faster than threefry's."""
    return jax.random.key(seed, impl="rbg")


def count_params(variables):
    """Trainable parameters (batch_stats excluded, as torchvision's count excludes buffers)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))
