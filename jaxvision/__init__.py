"""jaxvision: a JAX-native, pure-functional research codebase for computer vision."""

import os
from importlib import metadata

__version__ = "0.1.0"

# XLA:CPU's default sends convolutions to YNNPACK, which ran this project's
# train steps 1.2-1.3x slower than XLA's own (Eigen) convolutions
# (docs/performance.md). Unless XLA_FLAGS already picks a YNNPACK setting,
# convolutions go to Eigen; YNNPACK keeps the rest. XLA reads XLA_FLAGS when
# its CPU backend starts, so this holds when jaxvision is imported before JAX
# first touches a device (every script does). The flag means nothing to GPUs;
# jaxlib before 0.10 does not know it (and would abort on it).
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _jaxlib_at_least(major: int, minor: int) -> bool:
    try:
        version = metadata.version("jaxlib").split(".")
    except metadata.PackageNotFoundError:
        return False
    return tuple(int(part) for part in version[:2] if part.isdigit()) >= (major, minor)


if _YNN_FLAG not in os.environ.get("XLA_FLAGS", "") and _jaxlib_at_least(0, 10):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" {_YNN_FLAG}=-individual_convolution"
    ).strip()
