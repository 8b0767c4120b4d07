"""LZE backward selection as verl 0.9.1's custom replay-buffer sampler.

verl's V1 trainer builds its replay buffer from ``trainer.v1.sampler.custom_sampler.{path,name}``
(trainer_base.py ``_build_replay_buffer``) with ``trainer_mode, trainer_config,
max_off_policy_threshold, max_off_policy_strategy, sampler_kwargs, refill_fn``: no DAPO
arguments (a custom sampler owns its filtering). ``ReplayBuffer.sample`` (v1/replay_buffer.py)
polls TransferQueue until ``batch_size`` prompt groups are finished, then asks
``_select_prompt_uids`` which groups make the batch.

``LzeReplayBuffer._select_prompt_uids`` takes verl's choice (oldest groups first), reads each
group's rewards (``rm_scores`` sums, as verl's DAPO filter does) and its stable prompt key
(``extra_info.key``, written by the launcher's parquet export; the uid when absent), and keeps
the groups the pipeline's LZE selector picks (``Lze.select_for_update``: learning-zone energy
``lze.energy`` from the ledger's p0 and EMA, Gumbel top-K ``lze.select``, decisions recorded in
the step). Groups not kept are cleared from TransferQueue, as verl clears DAPO's surplus, so
they never reach a later step off-policy. The ``val`` partition is left to ``super()``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.pipeline import Pipeline, StepSelection
from workers.selection.selectors import Lze

logger = logging.getLogger(__name__)
SAMPLER_PATH = "pkg://workers.engines.verl.sampler"
SAMPLER_NAME = "LzeReplayBuffer"


def group_rewards(partition: dict[str, dict], partition_id: str, uids: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Per group: its trajectories' rewards, and its stable prompt key (``extra_info.key`` or the uid)."""
    wanted = set(uids)
    keys = [k for k in partition if k.split("_")[0] in wanted]
    by_uid: dict[str, list[float]] = {u: [] for u in uids}
    stable = {u: u for u in uids}
    if keys:
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores", "extra_info"])
        infos = list(data["extra_info"]) if "extra_info" in data else [None] * len(keys)
        for key, score, info in zip(keys, data["rm_scores"], infos, strict=True):
            uid = key.split("_")[0]
            by_uid[uid].append(float(score.sum().item()))
            info = getattr(info, "data", info)
            if isinstance(info, dict) and info.get("key") is not None:
                stable[uid] = str(info["key"])
    return [np.asarray(by_uid[u], dtype=np.float64) for u in uids], [stable[u] for u in uids]


class LzeReplayBuffer(ReplayBuffer):
    """verl's sync replay buffer whose train batches keep only LZE's top-K groups."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline: Pipeline | None = None
        self.step_selection: StepSelection | None = None
        self.epoch = 0
        self.last_metrics: dict[str, float] = {}
        self._global_steps = 0
        self._warned = False

    def attach_pipeline(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        self._global_steps = global_steps
        if self.step_selection is not None and self.step_selection.step != global_steps:
            self.step_selection = None  # the trainer did not open this step: one of our own
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id != "val":
            metrics.update(self.last_metrics)
        return batch, metrics

    def _lze(self) -> Lze | None:
        sel = self.pipeline.selectors.get("lze") if self.pipeline is not None else None
        if not isinstance(sel, Lze) or not sel.p.backward:
            if not self._warned:
                logger.warning("LzeReplayBuffer without a pipeline holding lze (backward): verl's selection")
                self._warned = True
            return None
        return sel

    def _select_prompt_uids(self, partition_id: str, sampleable_keys: set[str], batch_size: int):
        selected, snapshot, steps = super()._select_prompt_uids(partition_id, sampleable_keys, batch_size)
        sel = self._lze()
        if partition_id == "val" or sel is None or not selected:
            return selected, snapshot, steps
        assert self.pipeline is not None
        if self.step_selection is None:
            self.step_selection = self.pipeline.begin_step(self._global_steps, self.epoch)
        rewards, stable = group_rewards(self.partitions[partition_id], partition_id, selected)
        pass_rate = np.array([(r >= SUCCESS_THRESHOLD).mean() if r.size else 0.0 for r in rewards])
        chosen = sel.select_for_update(self.step_selection, pass_rate, stable)
        self.last_metrics = {
            "lze/groups_offered": float(len(selected)),
            "lze/groups_selected": float(chosen.sum()),
            "lze/energy_mean": float(self.step_selection.metrics.get("lze/energy_mean", 0.0)),
        }
        if not chosen.any():
            # Nothing live (every group zero-variance): train on verl's batch, whose GRPO
            # advantages are all 0, rather than stall the sync trainer.
            self.last_metrics["lze/fallback_all"] = 1.0
            return selected, snapshot, steps
        dropped = {u for u, ok in zip(selected, chosen) if not ok}
        self._clear_groups(partition_id, dropped)
        kept = [u for u, ok in zip(selected, chosen) if ok]
        return kept, dict(self.partitions[partition_id]), steps
