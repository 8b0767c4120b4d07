"""RL-ZVP: entropy-guided advantages for zero-variance groups (papers/002, docs/algorithms.md §5).

Mixed groups keep GRPO's advantage, broadcast over tokens. A zero-variance group,
token t of response i, with H_t the detached full-vocabulary entropy at that position:

- all-correct: ``A_t = alpha * H_t``
- all-wrong:   ``A_t = -alpha * (max_k H_k - H_t)``, max over the same response's tokens.

Groups of one are not zero-variance (verl gives them advantage r): they follow GRPO.
"""

from __future__ import annotations

import numpy as np

from workers.selection.groups import SUCCESS_THRESHOLD, as_rewards, group_stats
from workers.selection.grpo import advantages_from_groups, broadcast_to_tokens


def token_advantages(
    rewards: object,
    group_ids: object,
    token_entropy: object,
    response_mask: object,
    alpha: float = 0.1,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    success_threshold: float = SUCCESS_THRESHOLD,
) -> np.ndarray:
    """(rollouts, tokens) advantages: GRPO for mixed groups, RL-ZVP for zero-variance ones.

    token_entropy and response_mask: (rollouts, tokens); padding (mask 0) gets 0.
    """
    if alpha < 0:
        raise ValueError(f"rlzvp.alpha must be >= 0, got {alpha}")
    r = as_rewards(rewards)
    mask = np.asarray(response_mask, dtype=bool)
    entropy = np.asarray(token_entropy, dtype=np.float64)
    if entropy.shape != mask.shape or entropy.ndim != 2 or entropy.shape[0] != r.shape[0]:
        raise ValueError(
            "token_entropy and response_mask must both be (rollouts, tokens) with "
            f"{r.shape[0]} rollouts; got {entropy.shape} and {mask.shape}"
        )
    if not np.isfinite(entropy[mask]).all():
        raise ValueError("token_entropy has NaN or infinity on response tokens")
    groups = group_stats(r, group_ids, success_threshold)
    out = broadcast_to_tokens(advantages_from_groups(r, groups, norm_by_std, eps), mask)

    zero_variance = groups.zero_variance[groups.index]
    correct = r >= success_threshold
    masked_entropy = np.where(mask, entropy, 0.0)
    row_max = np.where(mask, entropy, -np.inf).max(axis=1, initial=-np.inf)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)

    positive = zero_variance & correct
    negative = zero_variance & ~correct
    out[positive] = alpha * masked_entropy[positive]
    out[negative] = -alpha * (row_max[negative, None] - masked_entropy[negative]) * mask[negative]
    return out


def shaped_rollouts(rewards: object, group_ids: object) -> np.ndarray:
    """Boolean per rollout: True where RL-ZVP (not GRPO) sets the advantage."""
    groups = group_stats(rewards, group_ids)
    shaped: np.ndarray = groups.zero_variance[groups.index]
    return shaped
