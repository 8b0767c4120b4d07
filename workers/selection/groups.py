"""Group statistics shared by every method: which rollouts belong to one prompt's group,
its size, mean, standard deviation, pass rate and whether it is zero-variance.

Notation follows docs/algorithms.md: a group is the set of rollouts drawn for one prompt in
one step, G_i its size, s_i its correct rollouts, p_i = s_i / G_i its pass rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A rollout is "correct" when its reward reaches this value. 0.5 classifies both
# common verifier conventions: {0, 1} and DAPO's {-1, 1}.
SUCCESS_THRESHOLD = 0.5


def as_rewards(rewards: object) -> np.ndarray:
    """Return rewards as a 1-D float64 array, refusing NaN or infinity with the positions."""
    array = np.asarray(rewards, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"rewards must be one value per rollout (1-D), got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"rewards must be finite numbers; rollouts {shown}{more} have NaN or infinity. "
            "A verifier returned no score: fix the verifier or give those rollouts reward 0."
        )
    return array


@dataclass(frozen=True)
class Groups:
    """Per-group statistics of one batch of rollouts.

    ``index[j]`` is the position of rollout j's group in the per-group arrays
    (``ids``, ``size``, ``mean``, ...), which are ordered by sorted group id.
    """

    ids: np.ndarray
    index: np.ndarray
    size: np.ndarray
    successes: np.ndarray
    mean: np.ndarray
    std: np.ndarray  # unbiased (n - 1), as torch.std in verl; 1.0 for groups of one
    zero_variance: np.ndarray  # two or more rollouts, all rewards equal

    @property
    def pass_rate(self) -> np.ndarray:
        rate: np.ndarray = self.successes / self.size
        return rate

    @property
    def all_correct(self) -> np.ndarray:
        solved: np.ndarray = self.successes == self.size
        return solved

    @property
    def all_wrong(self) -> np.ndarray:
        failed: np.ndarray = self.successes == 0
        return failed

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def group_stats(
    rewards: object, group_ids: object, success_threshold: float = SUCCESS_THRESHOLD
) -> Groups:
    """Group rollouts by ``group_ids`` and compute the statistics GRPO and the selectors use.

    Groups of one get mean 0 and std 1, verl's convention, so their advantage is the reward.
    """
    r = as_rewards(rewards)
    ids_in = np.asarray(group_ids)
    if ids_in.shape != r.shape:
        raise ValueError(
            f"group_ids must give one group per rollout: {ids_in.shape[0] if ids_in.ndim else 0} "
            f"ids for {r.shape[0]} rewards"
        )
    ids, index = np.unique(ids_in, return_inverse=True)
    index = index.reshape(-1)
    n_groups = ids.shape[0]
    size = np.bincount(index, minlength=n_groups)
    total = np.bincount(index, weights=r, minlength=n_groups)
    mean = total / np.maximum(size, 1)
    deviation = r - mean[index]
    squares = np.bincount(index, weights=deviation * deviation, minlength=n_groups)
    std = np.sqrt(squares / np.maximum(size - 1, 1))
    single = size == 1
    mean = np.where(single, 0.0, mean)
    std = np.where(single, 1.0, std)
    low = np.full(n_groups, np.inf)
    high = np.full(n_groups, -np.inf)
    np.minimum.at(low, index, r)
    np.maximum.at(high, index, r)
    zero_variance = (size >= 2) & (low == high)
    successes = np.bincount(index, weights=(r >= success_threshold), minlength=n_groups)
    return Groups(
        ids=ids,
        index=index,
        size=size,
        successes=successes.astype(np.int64),
        mean=mean,
        std=std,
        zero_variance=zero_variance,
    )
