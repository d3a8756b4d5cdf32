"""Test setup: 8 virtual CPU devices, so sharding tests run on any machine.

The flag must be set before `jax` is first imported, which is why it lives
here (and why jaxvision is imported inside the fixtures).
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")



@pytest.fixture(scope="session")
def digit_detection_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digit_detection" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_detection"))
    data.load_source("digit_detection", "train", data_dir)
    return data_dir
