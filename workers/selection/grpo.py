"""GRPO's group-relative advantage (Shao et al. 2024), the baseline of docs/algorithms.md §0.

Must agree with verl's ``compute_grpo_outcome_advantage`` to float precision: unbiased
group std, groups of one get mean 0 and std 1, and ``norm_by_std=False`` is Dr. GRPO.
"""

from __future__ import annotations

import numpy as np

from workers.selection.groups import Groups, group_stats


def advantages_from_groups(
    rewards: np.ndarray, groups: Groups, norm_by_std: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """Advantages for rollouts whose groups are already computed (shape: rollouts)."""
    centred: np.ndarray = rewards - groups.mean[groups.index]
    if not norm_by_std:
        return centred
    scaled: np.ndarray = centred / (groups.std[groups.index] + eps)
    return scaled


def group_advantages(
    rewards: object, group_ids: object, norm_by_std: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """One advantage per rollout: ``(r - mean_i) / (std_i + eps)``, or ``r - mean_i``.

    rewards: (rollouts,) finite floats. group_ids: (rollouts,) any hashable ids; groups
    may have any size, size one included. Zero-variance groups get exactly 0.
    """
    groups = group_stats(rewards, group_ids)
    r = np.asarray(rewards, dtype=np.float64)
    return advantages_from_groups(r, groups, norm_by_std=norm_by_std, eps=eps)


def broadcast_to_tokens(advantages: np.ndarray, response_mask: np.ndarray) -> np.ndarray:
    """(rollouts,) advantages -> (rollouts, tokens), zero on padding."""
    mask = np.asarray(response_mask, dtype=np.float64)
    if mask.ndim != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"response_mask must be (rollouts, tokens) with {advantages.shape[0]} rollouts, "
            f"got shape {mask.shape}"
        )
    return advantages[:, None] * mask
