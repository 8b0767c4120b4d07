"""The advantage step: verl's GRPO, the advantage method's adapter, HORA's loss weights.

``AdvantageShaping`` is a mixin of ``trainer.EdgeplaneTrainer``. After verl's own advantage
(GRPO), the pipeline's advantage method runs through its adapter (``methods.py``; RL-ZVP
rewrites the zero-variance groups, ``advantage.py``, and records its decisions through
``record_rlzvp``). Under HORA every rollout's advantage is then scaled by N / G_i, the
per-prompt loss weight of docs/algorithms.md §4 (the PPO objective is linear in it), so each
prompt weighs the same whatever its group size G_i. Last, it reads what the step trained on:
rollouts with a nonzero advantage and each group's mean response entropy.

verl hooks it overrides (verl's base class calls them by name):

- ``_compute_advantage``: verl's, then the adapter, the weights and the reading above.

It has no state of its own: it reads the trainer's ``pipeline``, the step's ``work``
(``selecting.py``) and verl's ``config`` and ``replay_buffer`` (the groups' outcomes).
"""

from __future__ import annotations

import torch
import transfer_queue as tq
from tensordict import TensorDict

from workers.engines.verl import advantage
from workers.engines.verl.methods import ADVANTAGE_ADAPTERS
from workers.selection.decisions import Layer


class AdvantageShaping:
    """verl's advantage step with Edgeplane's adapters and weights (see the module docstring);
    a mixin of ``EdgeplaneTrainer``."""

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        adapter = ADVANTAGE_ADAPTERS[self.pipeline.advantage.name]  # launch refused a method without one
        if adapter.after_grpo is not None:
            batch = adapter.after_grpo(self, batch, metrics)
        if self.pipeline.allocator is not None:
            self._weight_by_group_size(batch)
        self._read_trained_rollouts(batch)
        return batch

    def record_rlzvp(self, shaped: list[advantage.ShapedGroup]) -> None:
        """RL-ZVP's decisions and ``rlzvp/shaped_rollouts``, as the embedded engine records them
        (RL-ZVP's adapter in workers.engines.verl.methods calls this)."""
        if self.work is None:
            return
        step = self.work.selection
        outcomes = self.replay_buffer.outcomes  # type: ignore[attr-defined]
        for group in shaped:
            key = outcomes[group.uid].key if group.uid in outcomes else group.uid
            step.decide(key, Layer.ADVANTAGE, "rlzvp", "rlzvp.all_correct" if group.all_correct else "rlzvp.all_wrong",
                        {"group_size": group.size, "mean_advantage": group.mean_advantage})
        step.metric_add("rlzvp/shaped_rollouts", float(sum(g.size for g in shaped)))

    def _weight_by_group_size(self, batch) -> None:
        """HORA: every prompt weighs the same in the loss, whatever its group size G_i. The
        policy-gradient term is linear in the advantage, so N / G_i goes into the advantage."""
        from verl.workers.utils.padding import response_to_nested

        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["uid", "advantages", "response_mask"])
        uids = [str(u) for u in data["uid"]]
        padding = [tag.get("is_padding", False) for tag in batch.tags]
        sizes: dict[str, int] = {}
        for uid, pad in zip(uids, padding):
            if not pad:
                sizes[uid] = sizes.get(uid, 0) + 1
        group_size = int(self.config.actor_rollout_ref.rollout.n)
        weights = torch.tensor([1.0 if pad else group_size / sizes[u] for u, pad in zip(uids, padding)])
        weighted = data["advantages"].to_padded_tensor(0.0) * weights[:, None].to(torch.float32)
        nested = response_to_nested(weighted, data["response_mask"])
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                        fields=TensorDict({"advantages": nested, "returns": nested.clone()}, batch_size=len(batch)))

    def _read_trained_rollouts(self, batch) -> None:
        """Rollouts with a nonzero advantage, and each trained group's mean response entropy
        (verl's old-policy ``entropy``), for the step's accounting and the ledger."""
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        keys = [batch.keys[i] for i in real]
        if not keys or self.work is None:
            return
        correction = self.config.algorithm.get("rollout_correction", None)
        has_entropy = not (correction and correction.get("bypass_mode", False))  # bypass stores none
        fields = ["uid", "advantages", "response_mask", *(["entropy"] if has_entropy else [])]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)
        advantages = data["advantages"].to_padded_tensor(0.0)
        self.work.rollouts_effective += int((advantages.abs() > 0).any(dim=1).sum())
        if not has_entropy:
            return
        mask = data["response_mask"].to_padded_tensor(0).bool()
        token_entropy = data["entropy"].to_padded_tensor(0.0)
        sums: dict[str, list[float]] = {}
        for uid, row, row_mask in zip(data["uid"], token_entropy, mask):
            acc = sums.setdefault(str(uid), [0.0, 0.0])
            acc[0] += float(row[row_mask].sum())
            acc[1] += float(row_mask.sum())
        outcomes = self.replay_buffer.outcomes  # type: ignore[attr-defined]
        for uid, (total, count) in sums.items():
            if uid in outcomes and count:
                outcomes[uid].mean_entropy = total / count
