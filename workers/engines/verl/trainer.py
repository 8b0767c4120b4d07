"""Edgeplane's trainer inside verl 0.9.1's V1 sync trainer, and the TaskRunner that builds it.

``EdgeplaneTrainer`` subclasses ``PPOTrainerSync`` (v1/trainer_sync.py) and keeps
``trainer.v1.trainer_mode = sync``: verl's base class branches on that string
(trainer_base.py, e.g. ``_build_replay_buffer`` and ``_submit_batch_to_rollout``), so the
class is chosen by our ``EdgeplaneTaskRunner``, not by the mode. It is also registered as
``edgeplane_sync`` in verl's ``TRAINER_REGISTRY`` for lookups.

What it wires (each piece tested on real verl objects in tests/engines/verl):

- the selection ``Pipeline`` built from ``edgeplane.methods`` in the config (a JSON object
  of ``{method: params}``; ``launch.py`` writes it as ``+edgeplane.methods=...``);
- RL-ZVP after verl's GRPO in ``_compute_advantage`` (``advantage.apply_rlzvp``);
- LZE backward selection through the replay buffer ``sampler.LzeReplayBuffer``, which the
  trainer hands its pipeline (``_build_replay_buffer``);
- the pipeline's ledger saved by ``checkpoint.SelectionCheckpointCallback.on_save`` and
  restored after verl's own ``_load_checkpoint``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from workers.engines.verl import advantage, checkpoint
from workers.selection.pipeline import Pipeline

logger = logging.getLogger(__name__)
TRAINER_NAME = "edgeplane_sync"


def selection_methods(config: Any) -> dict[str, dict[str, Any]]:
    """``edgeplane.methods`` of a verl config: a JSON text or a mapping; {} when absent."""
    section = config.get("edgeplane", None) if hasattr(config, "get") else None
    raw = section.get("methods", None) if section is not None else None
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = json.loads(raw)
    from omegaconf import DictConfig, OmegaConf

    if isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    return {str(k): dict(v or {}) for k, v in dict(raw).items()}


def build_pipeline(config: Any) -> Pipeline:
    return Pipeline(
        selection_methods(config),
        batch_size=int(config.data.train_batch_size),
        group_size=int(config.actor_rollout_ref.rollout.n),
        seed=int(config.data.get("seed", 0) or 0),
    )


@register_trainer(TRAINER_NAME)
class EdgeplaneTrainer(PPOTrainerSync):
    """verl's sync trainer with Edgeplane's selectors at their layers."""

    def __init__(self, config: Any) -> None:
        self.pipeline = build_pipeline(config)
        super().__init__(config)

    # -- post-rollout: the replay buffer gets the pipeline ----------------------------------
    def _build_replay_buffer(self):
        buffer = super()._build_replay_buffer()
        if hasattr(buffer, "attach_pipeline"):
            buffer.attach_pipeline(self.pipeline)
        return buffer

    # -- advantage: RL-ZVP ---------------------------------------------------------------------
    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        sel = self.pipeline.selectors.get("rlzvp")
        if sel is None:
            return batch
        return advantage.apply_rlzvp(
            batch, metrics, alpha=float(sel.params.alpha),  # type: ignore[attr-defined]
            norm_by_std=bool(self.config.algorithm.get("norm_adv_by_std_in_grpo", True)),
        )

    # -- checkpoints ---------------------------------------------------------------------------
    def _load_checkpoint(self):
        super()._load_checkpoint()
        restored = checkpoint.restore_pipeline(self.config, self.global_steps)
        if restored is not None:
            self.pipeline = restored
            if hasattr(self.replay_buffer, "attach_pipeline"):
                self.replay_buffer.attach_pipeline(self.pipeline)


def _task_runner_class():
    """``TaskRunnerV1`` (verl/trainer/main_ppo.py) building ``EdgeplaneTrainer``.

    verl's runner picks the class by ``trainer.v1.trainer_mode`` from ``TRAINER_REGISTRY``;
    ours keeps the mode ``sync`` and builds our subclass. The rest of ``run`` is verl's:
    TransferQueue init, ``trainer.init()``, the agent-loop manager, ``fit``, ``tq.close()``.
    """
    import ray
    from verl.trainer.main_ppo import TaskRunnerV1

    base = TaskRunnerV1.__ray_metadata__.modified_class  # the plain class under @ray.remote

    class EdgeplaneTaskRunner(base):  # type: ignore[misc, valid-type]
        def run(self, config):
            import transfer_queue as tq
            from omegaconf import OmegaConf

            config.transfer_queue.enable = True
            OmegaConf.resolve(config)
            self.config = config
            tq.init(config.transfer_queue)
            succeeded = False
            try:
                self.trainer = EdgeplaneTrainer(config=config)
                self.trainer.init()
                self.init_agent_loop_manager()
                self.trainer.fit(self.agent_loop_manager)
                succeeded = True
            finally:
                try:
                    tracking = getattr(self.trainer, "logger", None)
                    if tracking is not None:
                        tracking.finish(exit_code=0 if succeeded else 1)
                finally:
                    tq.close()

    return ray.remote(EdgeplaneTaskRunner)
