"""A thin wrapper over `orbax.checkpoint.CheckpointManager` that fails loudly and recovers.

Each checkpoint step holds three items:
- `state`: the whole TrainState (params, batch stats, optimizer state, step, rng);
- `data`: the train iterator's position (JSON). It is the same on every process
  (`jaxvision.data.loader`), so process 0 writes it once and a run can resume
  with another number of processes or devices;
- `meta`: a small JSON header (model and dataset) checked before restoring, so a
  workdir of one model is never silently restored into another. It also holds a
  checksum of every saved array and of the data position (`fingerprints`),
  verified on restore, so a flipped bit on disk is caught, not restored.

Orbax writes each step into a temporary folder and renames it when complete, so a
run killed mid-save leaves the earlier checkpoints intact. On top of Orbax:
- a save that fails (disk full, folder not writable) raises a `UserError` that
  names the folder and the cause, at the save or at the next `check()`;
- `restore_latest` falls back past steps that do not restore (truncated,
  garbage, checksum mismatch) to the newest one that does, with one warning per
  broken step; it never deletes one.
"""

import functools
import hashlib
import json
import os
import re
import textwrap
from typing import Any

import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision import parallel
from jaxvision.errors import UserError


class CorruptCheckpoint(Exception):
    """A checkpoint step that cannot be read back as it was saved."""


def describe_error(error: BaseException, limit: int = 300) -> str:
    """The root cause of `error` in a few words: an OS error's text, else its first line.

    Orbax wraps TensorStore's errors (`... [os_error_code='28']`) and raises bare
    `Exception`s around them, so the chain is followed to its end.
    """
    causes = [error]
    while (cause := causes[-1].__cause__ or causes[-1].__context__) and len(causes) < 20:
        causes.append(cause)
    for e in causes:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if code := re.search(r"os_error_code='(\d+)'", str(e)):
            return os.strerror(int(code.group(1)))
    root = causes[-1]
    text = (str(root).strip().splitlines() or [""])[0]
    return textwrap.shorten(f"{type(root).__name__}: {text}", limit, placeholder=" ...")


def _fingerprint(x: jax.Array) -> jax.Array:
    """uint32 checksum of an array's bits: sum over elements of bits * an odd position weight.

    Any single flipped bit changes it (2^k times an odd number is never 0 mod
    2^32). Integer sums wrap exactly, so any sharding gives the same value, and
    no reshape is needed (no data moves between devices).
    """
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
        bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    index = jnp.zeros(x.shape, jnp.uint32)  # Row-major position of each element.
    stride = 1
    for axis in reversed(range(x.ndim)):
        index += jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(stride)
        stride = stride * x.shape[axis] % 2**32
    weight = index * jnp.uint32(0x9E3779B1) | jnp.uint32(1)  # Odd, different per position.
    return jnp.sum(bits * weight, dtype=jnp.uint32)


def fingerprints(tree: Any) -> dict[str, int]:
    """`{path: checksum}` for every array of `tree` (a TrainState or a dict of its fields).

    Paths ("params/conv/kernel") are those of `flax.serialization.to_state_dict`,
    so the fields of a partial restore (`{"params": ...}`) match those of the
    whole state.
    """
    tree = flax.serialization.to_state_dict(tree)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    arrays = [leaf for _, leaf in leaves]
    sharding = getattr(arrays[0], "sharding", None) if arrays else None
    mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
    sums = jax.device_get(_fingerprints_fn(mesh)(arrays))
    return dict(zip(paths, (int(s) for s in sums), strict=True))


@functools.cache
def _fingerprints_fn(mesh: jax.sharding.Mesh | None):
    """The jitted checksums of a list of arrays, replicated so that every process gets them."""
    out = None if mesh is None else NamedSharding(mesh, P())
    return jax.jit(lambda xs: [_fingerprint(x) for x in xs], out_shardings=out)


def _json_fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class Checkpointer:
    """Saves every `save_every_steps` steps, keeps the last `keep`, restores the newest good step."""

    def __init__(self, directory: str, *, save_every_steps: int = 1, keep: int = 3):
        self.directory = os.path.abspath(directory)  # Orbax needs absolute paths.
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=save_every_steps,
                create=True,
                # An unwritable folder fails in save(), not in a thread that
                # leaves the others waiting for it for minutes.
                async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
            ),
        )
        self._saving: int | None = None  # The step of the save in flight, if any.
        self._failed = False  # A failed save was raised already: do not raise it twice.

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any, meta: dict,
             *, force: bool = False) -> bool:
        """Starts an asynchronous save; returns whether this step is saved.

        Raises:
          UserError: this save, or the one before it, failed.
        """
        if not force and not self._manager.should_save(step):
            return False
        data_state = data_iterator.get_state()
        meta = dict(meta, fingerprints={
            "state": fingerprints(state), "data": _json_fingerprint(data_state),
        })
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
        )
        self.wait()  # Orbax would wait too; here a failure is blamed on the step it hit.
        try:
            saved = self._manager.save(step, args=args, force=force)
        except Exception as e:  # Orbax raises many types, bare Exception too.
            raise self._save_failed(e, step) from e
        self._saving = step if saved else self._saving
        return saved

    def check(self):
        """Raises UserError if a save running in the background has failed."""
        try:
            self._manager.check_for_errors()
        except Exception as e:
            raise self._save_failed(e) from e

    def wait(self):
        """Waits for the save in flight; raises UserError if it failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(e) from e
        self._saving = None

    def _save_failed(self, error: Exception, step: int | None = None) -> UserError:
        step = self._saving if step is None else step
        self._saving, self._failed = None, True
        saved = [s for s in self._manager.all_steps() if s != step]
        kept = (f"checkpoint step {max(saved)} and earlier are intact" if saved
                else "no earlier checkpoint exists")
        return UserError(
            f"Saving checkpoint step {step} to {self.directory} failed "
            f"({describe_error(error)}); free space there or make it writable (or use "
            f"another --workdir) and rerun the same command ({kept})."
        )

    def check_meta(self, step: int, meta: dict):
        """Raises UserError if checkpoint `step` was written for another model or dataset."""
        saved = self._restore(step, meta=ocp.args.JsonRestore()).meta
        for key, value in meta.items():
            if saved.get(key) != value:
                raise UserError(
                    f"The checkpoint in {self.directory} was written with {key}="
                    f"{saved.get(key)} but the config has {key}={value}; pass the "
                    "config that run was trained with, or use a new --workdir (or move "
                    "the old one away) to train this config."
                )

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
        """Restores the state (and the data iterator, in place) from `step`.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s with shardings:
        arrays come back laid out as they say, whatever layout wrote them.

        Raises:
          CorruptCheckpoint: the step cannot be read, or its checksums differ.
        """
        args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            args["data"] = ocp.args.JsonRestore()
        restored = self._restore(step, **args)
        self._verify(restored.meta, restored.state,
                     restored.data if data_iterator is not None else None)
        if data_iterator is not None:
            data_iterator.set_state(restored.data)
        return restored.state

    def restore_part(self, step: int, abstract_part: dict[str, Any]) -> dict[str, Any]:
        """Restores only the fields of the saved state that `abstract_part` names.

        `abstract_part` maps TrainState field names to abstract pytrees (as in
        `restore`), e.g. `{"params": ..., "batch_stats": ...}` for evaluation;
        the rest (the optimizer state) is not read.

        Raises:
          CorruptCheckpoint: as `restore`.
        """
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_part)
        restored = self._restore(step, meta=ocp.args.JsonRestore(), state=ocp.args.PyTreeRestore(
            abstract_part, restore_args=restore_args, partial_restore=True,
        ))
        self._verify(restored.meta, restored.state)
        return restored.state

    def restore_latest(self, restore_fn, meta: dict, *, set_broken_aside: bool = False):
        """`(step, restore_fn(step))` for the newest step that restores; `(None, None)` if none exists.

        A step that does not restore (`CorruptCheckpoint` from `restore_fn`) is
        passed over for the step before it, with one warning. A step deleted
        meanwhile (by a trainer's keep-N cleanup while evaluating) is skipped
        quietly. Broken steps are never deleted; with `set_broken_aside`
        (training, which writes those steps again) they are renamed to
        `<step>.corrupt` once an older step has restored.

        Raises:
          UserError: checkpoints exist but none restores, or they belong to
            another model (`check_meta`).
        """
        broken: dict[int, str] = {}  # step -> why it did not restore
        while True:
            self._manager.reload()  # Steps may have come and gone.
            steps = [s for s in self._manager.all_steps() if s not in broken]
            if not steps:
                break
            step = max(steps)
            value, why = None, "it did not restore on another process"
            try:
                self.check_meta(step, meta)
                value = restore_fn(step)
            except CorruptCheckpoint as e:
                why = str(e)
            if parallel.all_processes(value is not None):
                for bad, cause in sorted(broken.items()):
                    self._report_broken(bad, cause, step, set_broken_aside)
                return step, value
            if not os.path.isdir(self._step_dir(step)):
                logging.info("Checkpoint step %d was deleted while being read; trying the "
                             "newest step again.", step)
                why = "deleted"
            broken[step] = why
        broken = {s: why for s, why in broken.items() if why != "deleted"}
        if broken:
            step = max(broken)
            raise UserError(
                f"No checkpoint in {self.directory} restores (step {step}: {broken[step]}); "
                "move the broken step folders away to start over, or use a new --workdir."
            )
        return None, None

    def _report_broken(self, step: int, why: str, restored: int, set_aside: bool):
        """One warning for broken `step`; renames it to `<step>.corrupt` if `set_aside`."""
        folder = self._step_dir(step)
        if why == "deleted":
            return
        where = f"left in place at {folder}"
        if set_aside:
            if jax.process_index() == 0 and os.path.isdir(folder):
                target, n = f"{folder}.corrupt", 1
                while os.path.exists(target):
                    n += 1
                    target = f"{folder}.corrupt-{n}"
                os.rename(folder, target)
                where = f"moved to {target} for inspection, as this run writes step {step} again"
            parallel.barrier(f"jaxvision_set_aside_checkpoint_{step}")
            self._manager.reload()
        if jax.process_index() == 0:
            logging.warning("Checkpoint step %d could not be restored (%s); using step %d "
                            "instead (the broken folder is %s).", step, why, restored, where)

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _verify(self, meta: dict, state: Any, data_state: Any = None):
        """Raises CorruptCheckpoint if restored arrays differ from their saved checksums.

        Checkpoints written before checksums existed are accepted as they are.
        """
        saved = meta.get("fingerprints")
        if saved is None:
            return
        if data_state is not None and _json_fingerprint(data_state) != saved["data"]:
            raise CorruptCheckpoint("the data position does not match its checksum")
        for path, value in fingerprints(state).items():
            if saved["state"].get(path) != value:
                raise CorruptCheckpoint(f"array {path} does not match its checksum")

    def _restore(self, step: int, **args) -> Any:
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # Orbax raises bare Exception for bad data.
            raise CorruptCheckpoint(describe_error(e)) from e

    def close(self):
        """Waits for the save in flight to finish, then releases the manager.

        Raises:
          UserError: the save in flight failed (unless a failed save was raised already).
        """
        try:
            if not self._failed:
                self.wait()
        finally:
            try:
                self._manager.close()  # Waits too, so it raises a failed save again.
            except Exception:
                if not self._failed:
                    raise
