"""GRESO: history-based pre-rollout filtering (Zheng et al. 2025; docs/algorithms.md §2).

A prompt whose last z visits were all-correct (or all-wrong) is kept with probability
``max(p_easy ** z, floor)`` (or ``p_hard ** z``); unseen prompts and prompts whose last
visit was mixed are always kept. A controller steers p_easy and p_hard toward target
shares of zero-variance groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA_EASY = 0.25 / 3
ALPHA_HARD = 2 * 0.25 / 3


def keep_probability(
    trailing_easy: object,
    trailing_hard: object,
    p_easy: float,
    p_hard: float,
    floor: float = 0.01,
) -> np.ndarray:
    """Keep probability per candidate from its trailing all-correct / all-wrong visit counts.

    A prompt has at most one non-zero streak; if both were given, the easy one decides.
    """
    easy = np.asarray(trailing_easy)
    hard = np.asarray(trailing_hard)
    if easy.shape != hard.shape:
        raise ValueError(f"trailing_easy and trailing_hard differ in shape: {easy.shape} vs {hard.shape}")
    if (easy.size and easy.min() < 0) or (hard.size and hard.min() < 0):
        raise ValueError("trailing streaks count visits and cannot be negative")
    for name, value in (("p_easy", p_easy), ("p_hard", p_hard), ("floor", floor)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"greso.{name} must lie in [0, 1], got {value}")
    # Streaks are small integers: a power table indexed by streak is exact and fast.
    longest = int(max(easy.max(initial=0), hard.max(initial=0)))
    powers_easy = np.maximum(np.power(float(p_easy), np.arange(longest + 1)), floor)
    powers_hard = np.maximum(np.power(float(p_hard), np.arange(longest + 1)), floor)
    return np.where(easy > 0, powers_easy[easy], np.where(hard > 0, powers_hard[hard], 1.0))


@dataclass
class Controller:
    """Steers p_easy / p_hard once per step (after the first epoch) toward target ZV shares."""

    p_easy: float = 0.5
    p_hard: float = 0.5
    alpha_easy: float = ALPHA_EASY
    alpha_hard: float = ALPHA_HARD
    step_size: float = 0.01
    low: float = 0.05
    high: float = 0.95

    def update(self, rho_easy: float, rho_hard: float) -> None:
        """rho_x: share of this step's rolled-out groups that were all-correct / all-wrong."""
        self.p_easy = self._moved(self.p_easy, rho_easy >= self.alpha_easy)
        self.p_hard = self._moved(self.p_hard, rho_hard >= self.alpha_hard)

    def _moved(self, value: float, too_many: bool) -> float:
        value = value - self.step_size if too_many else value + self.step_size
        return float(min(max(value, self.low), self.high))


def next_rollout_batch(missing_groups: int, zv_rate: float, rollout_batch: int, minimum: int = 64) -> int:
    """How many prompts to draw next to fill ``missing_groups`` after a post-filter.

    ``max(minimum, min(B_roll, ceil(1.25 * missing / (1 - zv_rate))))``; a ZV rate of 1
    (no information on what survives) draws a full rollout batch.
    """
    if missing_groups <= 0:
        return 0
    if zv_rate >= 1.0:
        return rollout_batch
    wanted = math.ceil(1.25 * missing_groups / (1.0 - zv_rate))
    return max(min(minimum, rollout_batch), min(rollout_batch, wanted))
