"""Shared fixtures for the data tests: a tfds data dir with "digits" and a mesh."""

import jax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision import data


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digits" has been prepared (once per session)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data.load_source("digits", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def sharding() -> NamedSharding:
    """Batch dimension split over all 8 virtual devices."""
    assert jax.device_count() == 8, "tests/conftest.py should force 8 devices"
    return NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
