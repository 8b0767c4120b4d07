"""What an engine hands the selection: one prompt's scored group (``GroupOutcome``), and
the training batch the selection gives back (``TrainingBatch``). Plain data, read by the
pipeline and by the selectors' hooks alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workers.selection.groups import SUCCESS_THRESHOLD


@dataclass
class GroupOutcome:
    """One prompt's rollouts in this step, as the engine scored them."""

    key: str
    rewards: np.ndarray
    response_tokens: np.ndarray  # response length per rollout
    mean_entropy: float = float("nan")  # mean response-token entropy over the group
    prompt_tokens: int = 0  # the prompt's length in tokens (0: not measured by the engine)

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        self.response_tokens = np.asarray(self.response_tokens, dtype=np.int64)
        if self.rewards.ndim != 1 or self.rewards.size == 0 or self.response_tokens.shape != self.rewards.shape:
            raise ValueError(f"group {self.key!r}: need one reward and one response length per rollout")
        if not np.isfinite(self.rewards).all():
            raise ValueError(f"group {self.key!r}: rewards must be finite (a verifier returned no score)")

    @property
    def size(self) -> int:
        return int(self.rewards.size)

    @property
    def successes(self) -> int:
        return int((self.rewards >= SUCCESS_THRESHOLD).sum())

    @property
    def pass_rate(self) -> float:
        return self.successes / self.size

    @property
    def zero_variance(self) -> bool:
        return self.size >= 2 and bool(self.rewards.min() == self.rewards.max())



@dataclass
class TrainingBatch:
    groups: list[GroupOutcome]
    rewards: np.ndarray  # (rollouts,) in group order
    group_index: np.ndarray  # (rollouts,) position of each rollout's group in ``groups``
    rollout_weights: np.ndarray  # (rollouts,) N / G_i: every prompt weighs the same

    @property
    def response_tokens(self) -> np.ndarray:
        if not self.groups:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([g.response_tokens for g in self.groups])

    def subset(self, positions: Sequence[int]) -> TrainingBatch:
        """The batch restricted to some of its groups (a mini-batch of whole groups)."""
        groups = [self.groups[int(i)] for i in positions]
        rows = (np.concatenate([np.flatnonzero(self.group_index == int(i)) for i in positions])
                if groups else np.zeros(0, int))
        sizes = np.array([g.size for g in groups], dtype=np.int64)
        return TrainingBatch(groups, self.rewards[rows], np.repeat(np.arange(len(groups)), sizes),
                             self.rollout_weights[rows])

    def group_rows(self) -> list[np.ndarray]:
        """Rollout rows of each group, in group order."""
        starts = np.r_[0, np.cumsum([g.size for g in self.groups])]
        return [np.arange(starts[i], starts[i + 1]) for i in range(len(self.groups))]
