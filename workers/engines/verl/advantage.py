"""RL-ZVP in verl 0.9.1's V1 advantage step.

verl's ``PPOTrainer._compute_advantage`` (v1/trainer_base.py) reads ``uid, response_mask,
rm_scores, ...`` from TransferQueue, runs GRPO (``compute_advantage_for_multi_trajectories``)
and writes nested ``advantages`` and ``returns`` back. GRPO gives every zero-variance group
exactly 0. RL-ZVP keeps GRPO for mixed groups and gives zero-variance groups
entropy-shaped token advantages (``workers.selection.rlzvp.token_advantages``), from the
old policy's per-token ``entropy`` that ``_compute_old_log_prob`` stored in TransferQueue.

``apply_rlzvp`` runs after verl's own step: it reads what verl wrote and overwrites the
zero-variance groups only. Padding groups that ``_balance_batch`` added
(``padding_utils.upsample_batch_to_divisible_size``: one uid ``pad<hex>``, response mask 0,
rm_scores 0) are left exactly as verl wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.rlzvp import token_advantages

PAD_PREFIX = "pad"  # verl's padding uid: f"pad{uuid.uuid4().hex}"; real uids are str(uuid4())


@dataclass
class ShapeResult:
    advantages: torch.Tensor  # (rows, tokens), same dtype as verl's
    shaped_rows: np.ndarray  # bool (rows,): rows RL-ZVP set
    padding_rows: np.ndarray  # bool (rows,): rows left to verl (padding groups)

    def metrics(self, uids: Sequence[str]) -> dict[str, float]:
        shaped_groups = {u for u, s in zip(uids, self.shaped_rows) if s}
        return {
            "rlzvp/shaped_rollouts": float(self.shaped_rows.sum()),
            "rlzvp/shaped_groups": float(len(shaped_groups)),
            "rlzvp/padding_rows_skipped": float(self.padding_rows.sum()),
        }


@dataclass(frozen=True)
class ShapedGroup:
    """A zero-variance group RL-ZVP shaped: what its decision records."""

    uid: str
    all_correct: bool
    size: int
    mean_advantage: float


def shaped_groups(uids: Sequence[str], result: ShapeResult, scores: torch.Tensor, response_mask: torch.Tensor,
                  success_threshold: float = SUCCESS_THRESHOLD) -> list[ShapedGroup]:
    """One entry per shaped group, in first-row order (the embedded engine's decision fields)."""
    rewards = scores.detach().cpu().double().sum(-1).numpy()
    mask = response_mask.detach().cpu().numpy().astype(bool)
    advantages = result.advantages.detach().cpu().double().numpy()
    rows_of: dict[str, list[int]] = {}
    for i in np.flatnonzero(result.shaped_rows):
        rows_of.setdefault(str(uids[i]), []).append(int(i))
    out = []
    for uid, rows in rows_of.items():
        tokens = advantages[rows][mask[rows]]
        out.append(ShapedGroup(uid, bool(rewards[rows[0]] >= success_threshold), len(rows),
                               float(tokens.mean()) if tokens.size else 0.0))
    return out


def padding_rows(uids: Sequence[str], response_mask: np.ndarray) -> np.ndarray:
    """Rows of padding groups: uid prefix ``pad``, or a group whose rows all have an empty mask."""
    uids = [str(u) for u in uids]
    has_tokens: dict[str, bool] = {}
    for uid, row in zip(uids, np.asarray(response_mask).reshape(len(uids), -1)):
        has_tokens[uid] = has_tokens.get(uid, False) or bool(row.any())
    return np.array([u.startswith(PAD_PREFIX) or not has_tokens[u] for u in uids], dtype=bool)


def shape_zero_variance(
    uids: Sequence[str],
    keys: Sequence[str],
    scores: torch.Tensor,
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    grpo_advantages: torch.Tensor,
    *,
    alpha: float = 0.1,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    success_threshold: float = SUCCESS_THRESHOLD,
) -> ShapeResult:
    """verl's GRPO advantages with the zero-variance groups replaced by RL-ZVP's.

    All tensors are padded (rows, response tokens). ``keys`` are the TransferQueue keys
    ``{uid}_{session}_{index}``: a group's size is its number of sessions (verl's GRPO
    counts sessions, not agent-loop outputs), so a group of one session is not
    zero-variance whatever its number of outputs. A row's reward is its ``rm_scores`` sum
    (the agent loop copies the final output's reward to a session's earlier outputs).
    """
    n = len(uids)
    uids = [str(u) for u in uids]
    if not (len(keys) == n == scores.shape[0] == entropy.shape[0] == response_mask.shape[0]
            == grpo_advantages.shape[0]):
        raise ValueError("uids, keys, scores, entropy, response_mask and advantages need one row each")
    mask = response_mask.detach().cpu().numpy().astype(bool)
    pad = padding_rows(uids, mask)
    out = grpo_advantages.clone()
    real = np.flatnonzero(~pad)
    shaped = np.zeros(n, dtype=bool)
    if real.size == 0:
        return ShapeResult(out, shaped, pad)

    sessions: dict[str, set[str]] = {}
    for i in real:
        # "{uid}_{session}" of the key: HORA's extra rollouts have keys of their own prompt
        # group (session ids from 0 again) but the probe group's uid field.
        sessions.setdefault(uids[i], set()).add(str(keys[i]).rsplit("_", 1)[0])
    rewards = scores.detach().cpu().double().sum(-1).numpy()[real]
    group_ids = [uids[i] for i in real]
    ours = token_advantages(
        rewards, group_ids, entropy.detach().cpu().double().numpy()[real], mask[real],
        alpha=alpha, norm_by_std=norm_by_std, eps=eps, success_threshold=success_threshold,
    )
    by_group: dict[str, list[float]] = {}
    for g, r in zip(group_ids, rewards):
        by_group.setdefault(g, []).append(float(r))
    zero_variance = {g for g, rs in by_group.items() if len(sessions[g]) >= 2 and min(rs) == max(rs)}
    local = np.array([g in zero_variance for g in group_ids], dtype=bool)
    rows = real[local]
    if rows.size:
        out[torch.as_tensor(rows)] = torch.as_tensor(ours[local], dtype=out.dtype, device=out.device)
    shaped[rows] = True
    return ShapeResult(out, shaped, pad)


def apply_rlzvp(batch, metrics: dict, *, alpha: float, norm_by_std: bool, eps: float = 1e-6,
                success_threshold: float = SUCCESS_THRESHOLD):
    """After verl's ``_compute_advantage``: rewrite zero-variance groups in TransferQueue.
    Returns the batch and the groups shaped (for the step's decisions).

    ``batch`` is the step's ``KVBatchMeta``. Needs the ``entropy`` field, which
    ``_compute_old_log_prob`` writes unless rollout correction runs in bypass mode.
    """
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_to_nested

    fields = ["uid", "response_mask", "rm_scores", "entropy", "advantages"]
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    if "entropy" not in data:  # TensorDict: membership over its keys
        raise RuntimeError("rlzvp needs the old policy's token entropy, which verl does not store with "
                           "algorithm.rollout_correction.bypass_mode=true: turn bypass mode off")
    nested_mask = data["response_mask"]
    uids = [str(u) for u in data["uid"]]
    scores, mask = data["rm_scores"].to_padded_tensor(0.0), nested_mask.to_padded_tensor(0)
    result = shape_zero_variance(
        uids, batch.keys, scores, data["entropy"].to_padded_tensor(0.0), mask,
        data["advantages"].to_padded_tensor(0.0),
        alpha=alpha, norm_by_std=norm_by_std, eps=eps, success_threshold=success_threshold,
    )
    nested = response_to_nested(result.advantages, nested_mask)
    # GRPO's returns are its advantages (core_algos.compute_grpo_outcome_advantage returns both).
    output = TensorDict({"advantages": nested, "returns": nested.clone()}, batch_size=len(batch))
    batch = tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)
    metrics.update(result.metrics(uids))
    return batch, shaped_groups(uids, result, scores, mask, success_threshold)
