"""LZE: learning-zone energy (papers/003, reference code Stellaris167/LZE; docs/algorithms.md §6).

    E = D * 4p(1 - p) * (1 + a * m),   D = max(1 - p0, d_init_min)

with momentum m = min(2 |p - ema_prev|, 1) (reference code) or m = p - ema_prev (paper
text, ``momentum="signed"``). The EMA starts at p0, so on first sight m = 0.
"""

from __future__ import annotations

import numpy as np

MOMENTUM_KINDS = ("abs", "signed")


def energy(
    p: object,
    p_init: object,
    ema_prev: object,
    momentum_weight: float = 0.3,
    d_init_min: float = 0.05,
    momentum: str = "abs",
) -> np.ndarray:
    """Learning-zone energy per group. On first sight pass ``ema_prev = p_init = p``."""
    if momentum not in MOMENTUM_KINDS:
        raise ValueError(f"lze.momentum must be one of {', '.join(MOMENTUM_KINDS)}, got {momentum!r}")
    p_arr = np.asarray(p, dtype=np.float64)
    p0 = np.asarray(p_init, dtype=np.float64)
    ema = np.asarray(ema_prev, dtype=np.float64)
    for name, values in (("p", p_arr), ("p_init", p0), ("ema_prev", ema)):
        # NaN fails both comparisons, so this also rejects NaN.
        if values.size and not (values.min() >= 0 and values.max() <= 1):
            raise ValueError(f"LZE {name} must be pass rates in [0, 1] with no NaN")
    # In-place steps: this runs over every group of a large batch each step.
    out = np.array(1.0 - p0, dtype=np.float64)
    np.maximum(out, d_init_min, out=out)  # D
    uncertainty = np.array(1.0 - p_arr, dtype=np.float64)
    uncertainty *= p_arr
    uncertainty *= 4.0
    out *= uncertainty  # 4p(1 - p)
    m = np.array(p_arr - ema, dtype=np.float64)
    if momentum == "abs":
        np.abs(m, out=m)
        m *= 2.0
        np.minimum(m, 1.0, out=m)
    m *= momentum_weight
    m += 1.0
    out *= m
    return out


def update_ema(ema_prev: object, p: object, decay: float = 0.9) -> np.ndarray:
    """``ema <- decay * ema + (1 - decay) * p`` (after scoring)."""
    return decay * np.asarray(ema_prev, dtype=np.float64) + (1.0 - decay) * np.asarray(p, dtype=np.float64)


def select_count(n_groups: int, n_live: int, kappa: float = 0.4, min_ratio: float = 0.3) -> int:
    """K = max(floor(kappa * B), floor(min_ratio * B)), capped at the live groups."""
    return int(min(max(np.floor(kappa * n_groups), np.floor(min_ratio * n_groups)), n_live))


def select(
    energy: object,
    live: object,
    kappa: float = 0.4,
    min_ratio: float = 0.3,
    noise: float = 0.05,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """Gumbel top-K backward selection: boolean mask of the groups that enter the update.

    ``live`` marks groups with 0 < p < 1; only they can be chosen. The Gumbel scale is
    ``noise * max(max E - min E, 0.01)`` over the live groups. Returns K = select_count
    groups (whole groups), chosen by the highest perturbed energy.
    """
    e = np.asarray(energy, dtype=np.float64)
    live_mask = np.asarray(live, dtype=bool)
    if e.shape != live_mask.shape or e.ndim != 1:
        raise ValueError(f"energy and live must be 1-D and of one length, got {e.shape} and {live_mask.shape}")
    if not (0 < kappa <= 1 and 0 <= min_ratio <= 1 and noise >= 0):
        raise ValueError(
            f"LZE needs 0 < lze.kappa <= 1, 0 <= lze.min_ratio <= 1, lze.noise >= 0; "
            f"got kappa={kappa}, min_ratio={min_ratio}, noise={noise}"
        )
    chosen = np.zeros(e.shape, dtype=bool)
    live_idx = np.flatnonzero(live_mask)
    k = select_count(e.shape[0], live_idx.shape[0], kappa, min_ratio)
    if k == 0:
        return chosen
    live_energy = e[live_idx]
    scale = noise * max(float(live_energy.max() - live_energy.min()), 0.01)
    # Gumbel(0, 1) is -log(-log U): the same law as Generator.gumbel, several times
    # faster, and computed in place (one buffer) since this runs over every group.
    perturbed = rng.random(live_idx.shape[0])
    np.log(perturbed, out=perturbed)
    np.negative(perturbed, out=perturbed)
    np.log(perturbed, out=perturbed)
    perturbed *= -scale
    perturbed += live_energy
    chosen[live_idx[top_k(perturbed, k)]] = True  # live_idx is sorted: a sequential write
    return chosen


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest values, exactly (ties at the cut by position).

    For large arrays, sample quantiles bracket the k-th largest value; everything above
    the bracket is in, and only the few values inside it are partitioned. A bracket that
    misses (checked by counting) falls back to a full partition, so the result is exact.
    """
    n = values.shape[0]
    mask = np.zeros(n, dtype=bool)
    if k >= n:
        mask[:] = True
        return mask
    if k <= 0:
        return mask
    if n >= 50_000:
        sample = values[:: n // 20_000]
        q = 1.0 - k / n
        low, high = np.quantile(sample, [max(q - 0.01, 0.0), min(q + 0.01, 1.0)])
        np.greater(values, high, out=mask)
        need = k - int(np.count_nonzero(mask))
        band = np.flatnonzero((values >= low) & ~mask)
        if 0 <= need <= band.shape[0]:
            if need:
                mask[band[np.argpartition(-values[band], need - 1)[:need]]] = True
            return mask
        mask[:] = False
    mask[np.argpartition(-values, k - 1)[:k]] = True
    return mask


def replay_count(n_pruned: int, ratio: float = 0.1) -> int:
    """Pruned prompts replayed at an epoch start: max(1, floor(ratio * |pruned|)), 0 if none."""
    if n_pruned == 0:
        return 0
    return max(1, int(np.floor(ratio * n_pruned)))
