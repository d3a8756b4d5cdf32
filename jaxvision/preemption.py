"""Stopping a training run cleanly on SIGTERM or SIGINT (preemption, Ctrl-C).

SLURM, Kubernetes and cloud preemption send SIGTERM and give the job some
seconds before SIGKILL; Ctrl-C sends SIGINT. While `StopSignals` is active,
either one only sets a flag: the train loop finishes its step, saves a
checkpoint of it, waits until it is complete, logs one line and raises
`Stopped`, which the scripts turn into exit status 128 + signal (143 for
SIGTERM, 130 for SIGINT: the run is not finished, so a scheduler must not take
it for done). Rerunning the same command resumes exactly there. A second
signal exits at once, without waiting for the save (the earlier checkpoints
stay intact).

With several processes, only some of them may get the signal, and all must stop
after the same step. Each process puts its flag into a tiny all-reduce that
runs beside every train step, and reads the result one step later: every
process reads the same value at the same step, without waiting for the step
just started.
"""

import os
import signal
import threading
from typing import Self

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxvision import parallel

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Training stopped on a signal after saving a checkpoint of `step`."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step
        self.exit_code = 128 + signum


class StopSignals:
    """A context that turns SIGTERM and SIGINT into `stop_requested()` for the train loop.

    Handlers are installed only from the main thread (Python allows no other);
    elsewhere the context does nothing. On exit the previous handlers return.
    """

    def __init__(self, mesh: Mesh):
        self._signum = 0  # The first signal received; 0: none.
        self._previous = {}
        self._multi = jax.process_count() > 1
        if self._multi:
            self._vote_sharding = parallel.batch_sharding(mesh)  # One entry per device.
            self._any = jax.jit(jnp.max, out_shardings=parallel.replicated(mesh))
            self._last_vote = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame):
        del frame
        if self._signum:
            name = signal.Signals(signum).name
            os.write(2, f"\nerror: second {name}: exiting without waiting for the "
                        "checkpoint (the earlier ones are intact).\n".encode())
            os._exit(128 + signum)
        self._signum = signum

    def stop_requested(self) -> int:
        """The signal to stop on now (0: go on). Call once after every train step.

        One process: the signal received so far. Several: the largest signal
        any process had received by the previous call, the same on all.
        """
        if not self._multi:
            return self._signum
        local = np.full((jax.local_device_count(),), self._signum, np.int32)
        votes = jax.make_array_from_process_local_data(self._vote_sharding, local)
        vote, self._last_vote = self._last_vote, self._any(votes)
        return 0 if vote is None else int(vote)
