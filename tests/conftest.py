"""Test setup: 8 virtual CPU devices, so sharding tests run on any machine.

The flag must be set before `jax` is first imported, which is why it lives here.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
