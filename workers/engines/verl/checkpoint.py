"""Selector state saved with each verl checkpoint and restored on resume.

verl 0.9.1 does not save selector state. ``trainer.checkpoint_callback_class`` names a
``verl.trainer.ppo.checkpoint_callback.CheckpointCallback`` subclass whose ``on_save`` the
V1 trainer calls on the driver after each save (trainer_base.py ``_save_checkpoint``, after
``latest_checkpointed_iteration.txt`` is written) with the ``global_step_{N}`` folder.
``SelectionCheckpointCallback.on_save`` writes the trainer's ``Pipeline`` (ledger, every
method's state, RNG, and the trainer's epoch and candidates given back) there as
``edgeplane_selection.npz`` (the ledger's numpy archive); ``restore_pipeline`` reads it
back for the folder verl's ``_load_checkpoint`` resumed from.

``SelectionCheckpoint`` is the trainer's side, a mixin of ``trainer.EdgeplaneTrainer``: what it
saves besides the pipeline (``selection_state``: the epoch and the candidates given back, the
state of ``selecting.py``) and the restore after verl's own.

verl hooks it overrides (verl's base class calls them by name):

- ``_load_checkpoint``: verl's, then ``restore_selection``.

It has no state of its own: it replaces the trainer's ``pipeline`` and restores
``PromptSelection``'s ``epoch``, ``dataloader_wrapped`` and ``prompt_pool``, for the step verl
resumed at (``global_steps``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

from workers.engines.verl.edgeplane_config import pipeline_audit_share, pipeline_methods
from workers.selection.pipeline import Pipeline

logger = logging.getLogger(__name__)
STATE_KEY = "verl_trainer"  # the trainer's own part of the checkpointed selection state
STATE_FILE = "edgeplane_selection.npz"  # PromptLedger.save: a numpy archive (arrays + a JSON meta entry)
CALLBACK_FQN = "workers.engines.verl.checkpoint.SelectionCheckpointCallback"


def state_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / STATE_FILE


class SelectionCheckpointCallback(CheckpointCallback):
    """Writes ``trainer.pipeline`` next to verl's checkpoint of the same step."""

    def on_save(self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False,
                **kwargs: Any) -> None:
        pipeline = getattr(trainer, "pipeline", None)
        if pipeline is None:
            return
        own_state = getattr(trainer, "selection_state", None)
        if callable(own_state):  # the trainer's epoch and the candidates it gave back
            pipeline.ledger.method_state[STATE_KEY] = own_state()
        path = state_path(checkpoint_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pipeline.save(tmp)
        os.replace(tmp, path)  # a crash mid-write never leaves a torn file under the real name
        logger.info("saved selection state of step %d to %s", global_step, path)
        sink = getattr(trainer, "sink", None)
        if sink is not None:  # the control plane shows the last checkpoint a resume would start from
            sink.checkpoint_saved(step=global_step, path=str(checkpoint_dir))


def resumed_folder(config: Any, global_steps: int) -> Path | None:
    """The ``global_step_{N}`` folder verl's ``_load_checkpoint`` resumed from, or None."""
    if global_steps <= 0 or config.trainer.resume_mode == "disable":
        return None
    if config.trainer.resume_mode == "resume_path":
        folder = Path(str(config.trainer.resume_from_path))
    else:
        folder = Path(str(config.trainer.default_local_dir)) / f"global_step_{global_steps}"
    if not folder.is_absolute():
        folder = Path.cwd() / folder
    return folder


def restore_pipeline(config: Any, global_steps: int) -> Pipeline | None:
    """The pipeline saved with the checkpoint verl resumed from; None when starting fresh.

    A checkpoint without the state file (saved before this callback was configured, or a
    crash between verl's save and ``on_save``) resumes with fresh selector state and a warning.
    """
    folder = resumed_folder(config, global_steps)
    if folder is None:
        return None
    path = state_path(folder)
    if not path.exists():
        logger.warning("no selection state at %s: selectors start fresh at step %d", path, global_steps)
        return None
    return Pipeline.load(path, pipeline_methods(config), batch_size=int(config.data.train_batch_size),
                         group_size=int(config.actor_rollout_ref.rollout.n), audit_share=pipeline_audit_share(config))


class SelectionCheckpoint:
    """The trainer's selection state in verl's checkpoints (see the module docstring); a mixin of
    ``EdgeplaneTrainer``."""

    def selection_state(self) -> dict[str, Any]:
        """What the checkpoint callback saves besides the pipeline: epoch, candidates given back."""
        pending = self.prompt_pool.pending_keys() if self.prompt_pool is not None else []
        return {"epoch": self.epoch, "dataloader_wrapped": self.dataloader_wrapped, "pending_keys": pending}

    def _load_checkpoint(self):
        super()._load_checkpoint()
        self.restore_selection()

    def restore_selection(self) -> None:
        """The selection state saved with the checkpoint verl resumed from (``global_steps``)."""
        restored = restore_pipeline(self.config, self.global_steps)
        if restored is None:
            return
        self.pipeline = restored
        state = restored.ledger.method_state.get(STATE_KEY) or {}
        self.epoch = int(state.get("epoch", 0))
        self.dataloader_wrapped = bool(state.get("dataloader_wrapped", False))
        if self.prompt_pool is not None and state.get("pending_keys"):
            self.prompt_pool.put_back(self.prompt_pool.rebuild(state["pending_keys"]))
