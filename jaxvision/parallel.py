"""Device mesh, shardings and multi-host start-up.

The mesh has two axes over all devices of all processes:

- `data`: pure data parallelism; the train state is replicated along it.
- `fsdp`: fully sharded data parallelism; each parameter (and its optimizer
  state) is split along it, so a model needs only 1/fsdp of its memory per
  device. `fsdp=1` (the default) is plain data parallelism.

Batches are split over both axes (every device gets a different slice), and
`jax.jit` inserts the collectives: a gradient all-reduce for `data`,
all-gathers and reduce-scatters for `fsdp`. The training result does not
depend on the mesh shape.

Multi-host runs use JAX's own runtime (`jax.distributed.initialize`). The few
decisions processes must share on the host (a checkpoint restored everywhere,
process 0's answer, a barrier) go through `jax.experimental.multihost_utils`.
"""

import os
import socket
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision.errors import UserError

BATCH_AXES = ("data", "fsdp")  # The batch dimension is split over the whole mesh.


def make_mesh(
    data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A `(data, fsdp)` mesh over `devices` (default: every device of every process).

    Args:
      data: size of the `data` axis; -1 takes all devices not used by `fsdp`.
      fsdp: size of the `fsdp` axis.
      devices: the devices, e.g. `jax.devices()[:1]` in tests.
    """
    devices = jax.devices() if devices is None else list(devices)
    count = len(devices)
    if fsdp < 1 or count % fsdp:
        raise UserError(
            f"config.mesh.fsdp={fsdp} does not divide the {count} devices; use a "
            f"divisor of {count}."
        )
    if data == -1:
        data = count // fsdp
    if data * fsdp != count:
        raise UserError(
            f"config.mesh.data={data} x config.mesh.fsdp={fsdp} is {data * fsdp} "
            f"devices but there are {count}; set config.mesh.data=-1 to use them all."
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device."""
    return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Splits the largest dimension divisible by `fsdp` over the `fsdp` axis.

    Arrays with no such dimension (scalars, small biases) stay replicated.
    """
    if fsdp == 1:
        return P()
    candidates = [i for i, size in enumerate(shape) if size % fsdp == 0]
    if not candidates:
        return P()
    axis = max(candidates, key=lambda i: shape[i])
    return P(*[("fsdp" if i == axis else None) for i in range(len(shape))])


def _cluster_detected() -> bool:
    """True under a multi-process launcher that `jax.distributed` detects by itself."""
    env = os.environ
    return (
        int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        or "JAX_COORDINATOR_ADDRESS" in env
    )


def _wait_for_coordinator(address: str, timeout_s: float):
    """Raises UserError unless `host:port` accepts a TCP connection within `timeout_s`.

    JAX aborts the whole process (no Python exception) when the coordinator
    cannot be reached, so non-coordinator processes check first.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise UserError(
                    f"Could not reach the coordinator at {address} within {timeout_s:.0f} s "
                    f"({e.strerror or e}); start process 0 there first and check the "
                    "address, the port and the firewall."
                ) from e
            time.sleep(0.5)


def initialize_distributed(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    timeout_s: float = 300,
):
    """Joins a multi-process run, or does nothing for a single process.

    With `coordinator_address` (and `num_processes`, `process_id`) given, they
    are used; under SLURM or Open MPI, `jax.distributed` detects them itself.
    Call before any other JAX call.
    """
    given = [coordinator_address, num_processes, process_id]
    if all(v is None for v in given) and not _cluster_detected():
        return
    # jaxvision.preemption handles SIGTERM itself, on every process alike.
    jax.config.update("jax_enable_preemption_service", False)
    if all(v is None for v in given):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(initialization_timeout=int(timeout_s))
    else:
        if any(v is None for v in given):
            raise UserError(
                "Multi-process runs need all of --coordinator_address, "
                "--num_processes and --process_id; pass the missing ones."
            )
        if ":" not in coordinator_address:
            raise UserError(
                f"--coordinator_address={coordinator_address} has no port; use host:port."
            )
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UserError(
                f"--process_id={process_id} is out of range for --num_processes="
                f"{num_processes}; use 0 to {num_processes - 1}."
            )
        if process_id != 0:
            _wait_for_coordinator(coordinator_address, timeout_s)
        # CPU collectives across processes (ignored by GPU backends, which use NCCL).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address, num_processes, process_id,
            initialization_timeout=int(timeout_s),
        )
    logging.info(
        "Process %d of %d; %d local and %d global devices.",
        jax.process_index(), jax.process_count(), jax.local_device_count(),
        jax.device_count(),
    )


def all_processes(ok: bool) -> bool:
    """True on every process when `ok` is True on every process (blocks until all ask)."""
    if jax.process_count() == 1:
        return ok
    votes = multihost_utils.process_allgather(np.asarray(ok, np.int32))  # [processes]
    return bool(np.all(votes))


def from_process_0(value: int) -> int:
    """Process 0's `value` on every process (blocks until all ask)."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def barrier(name: str):
    """Waits until every process has reached `barrier(name)`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
