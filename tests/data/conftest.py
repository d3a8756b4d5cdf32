"""Shared fixtures for the data tests: a mesh, parsed flags ("digits_dir" is in tests/conftest.py)."""

import jax
import pytest
from absl import flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@pytest.fixture(scope="session")
def sharding() -> NamedSharding:
    """Batch dimension split over all 8 virtual devices."""
    assert jax.device_count() == 8, "tests/conftest.py should force 8 devices"
    return NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))


@pytest.fixture
def parsed_flags():
    """grain's worker processes read an absl flag; `scripts/` parse flags first."""
    was_parsed = flags.FLAGS.is_parsed()
    flags.FLAGS.mark_as_parsed()
    yield
    if not was_parsed:
        flags.FLAGS.unparse_flags()
