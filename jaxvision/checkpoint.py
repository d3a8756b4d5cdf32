"""A thin wrapper over `orbax.checkpoint.CheckpointManager`.

Each checkpoint step holds three items:
- `state`: the whole TrainState (params, batch stats, optimizer state, step, rng);
- `data`: the train iterator's position (JSON). It is the same on every process
  (`jaxvision.data.loader`), so process 0 writes it once and a run can resume
  with another number of processes or devices;
- `meta`: a small JSON header (model and dataset) checked before restoring, so a
  workdir of one model is never silently restored into another.

Orbax writes each step into a temporary folder and renames it when complete, so a
run killed mid-save leaves the earlier checkpoints intact.
"""

import os
from typing import Any

import orbax.checkpoint as ocp

from jaxvision.errors import UserError


class Checkpointer:
    """Saves every `save_every_steps` steps, keeps the last `keep`, restores any step."""

    def __init__(self, directory: str, *, save_every_steps: int = 1, keep: int = 3):
        self.directory = os.path.abspath(directory)  # Orbax needs absolute paths.
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=save_every_steps,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any, meta: dict,
             *, force: bool = False) -> bool:
        """Starts an asynchronous save; returns whether this step is saved."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_iterator.get_state()),
            meta=ocp.args.JsonSave(meta),
        )
        return self._manager.save(step, args=args, force=force)

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
        """
        args = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            args["data"] = ocp.args.JsonRestore()
        restored = self._restore(step, **args)
        if data_iterator is not None:
            data_iterator.set_state(restored.data)
        return restored.state

    def restore_part(self, step: int, abstract_part: dict[str, Any]) -> dict[str, Any]:
        """Restores only the fields of the saved state that `abstract_part` names.

        `abstract_part` maps TrainState field names to abstract pytrees (as in
        `restore`), e.g. `{"params": ..., "batch_stats": ...}` for evaluation;
        the rest (the optimizer state) is not read.
        """
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_part)
        return self._restore(step, state=ocp.args.PyTreeRestore(
            abstract_part, restore_args=restore_args, partial_restore=True,
        )).state

    def _restore(self, step: int, **args) -> Any:
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**args))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"Checkpoint step {step} in {self.directory} could not be read "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); it may be "
                "corrupt or from another version: move that step's folder away to "
                "resume from an earlier step, or use a new --workdir."
            ) from e

    def close(self):
        """Waits for pending saves to finish, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
