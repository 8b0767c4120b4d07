"""HIVE: history-informed, online-verified pre-rollout selection (docs/algorithms.md §3).

Stage 1 (no generation): ``P_keep = lam * s_rew + (1 - lam) * s_ent`` with s_rew the GRESO
keep probability and s_ent the prompt's mean response entropy, min-max normalised over the
candidates with history (unseen: 1.0). Stage 2: one forward pass of the current policy over
the prompt gives V(x), the mean next-token entropy over prompt positions 2..L; the gate keeps
V >= median (default) or a band below the most uncertain quarter.
"""

from __future__ import annotations

import numpy as np

GATE_MODES = ("median", "band")


def entropy_score(mean_response_entropy: object) -> np.ndarray:
    """s_ent: min-max normalised historical entropy; NaN (no history) scores 1.0."""
    h = np.asarray(mean_response_entropy, dtype=np.float64)
    seen = ~np.isnan(h)
    out = np.ones(h.shape)
    if seen.any():
        low, high = h[seen].min(), h[seen].max()
        out[seen] = (h[seen] - low) / (high - low) if high > low else 1.0
    return out


def stage1_keep_probability(s_rew: object, s_ent: object, lam: float = 1.0) -> np.ndarray:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"hive.lam must lie in [0, 1], got {lam}")
    return lam * np.asarray(s_rew, dtype=np.float64) + (1.0 - lam) * np.asarray(s_ent, dtype=np.float64)


def prompt_entropy(position_entropy: object, mask: object) -> np.ndarray:
    """V(x): mean over the masked positions of the next-token entropies (prompts, positions).

    Pass the entropies of the distributions that predict prompt tokens 2..L, i.e. the
    logits at positions 1..L-1, with the mask of real (non-padding) predicted tokens.
    """
    h = np.asarray(position_entropy, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if h.shape != m.shape or h.ndim != 2:
        raise ValueError(f"position_entropy and mask must both be (prompts, positions), got {h.shape} and {m.shape}")
    counts = m.sum(axis=1)
    if counts.size and counts.min() == 0:
        raise ValueError("every prompt needs at least two tokens for a prompt entropy")
    entropy: np.ndarray = np.where(m, h, 0.0).sum(axis=1) / counts
    return entropy


def gate_threshold(
    prompt_entropy: object, mode: str = "median", k_off: float = 0.25, k_keep: float = 0.5
) -> tuple[float, float]:
    """(lower, upper) bounds of V kept by the gate (upper is inf for the median gate)."""
    v = np.asarray(prompt_entropy, dtype=np.float64)
    if mode not in GATE_MODES:
        raise ValueError(f"hive.gate must be one of {', '.join(GATE_MODES)}, got {mode!r}")
    if v.size == 0:
        return (np.inf, np.inf)
    if mode == "median":
        return (float(np.median(v)), np.inf)
    order = np.sort(v)[::-1]
    skip, keep = _band(v.size, k_off, k_keep)
    return (float(order[skip + keep - 1]), float(order[skip])) if keep else (np.inf, np.inf)


def _band(n: int, k_off: float, k_keep: float) -> tuple[int, int]:
    if not (0 <= k_off < 1 and 0 < k_keep <= 1 and k_off + k_keep <= 1):
        raise ValueError(
            f"hive band needs 0 <= k_off < 1, 0 < k_keep <= 1 and k_off + k_keep <= 1; got {k_off}, {k_keep}"
        )
    skip = int(np.floor(k_off * n))
    keep = min(n - skip, max(1, int(np.floor(k_keep * n))))
    return skip, keep


def entropy_gate(prompt_entropy: object, mode: str = "median", k_off: float = 0.25, k_keep: float = 0.5) -> np.ndarray:
    """Keep mask of stage 2 over this step's stage-1 survivors.

    median: keep V >= median(V). band: sort by V descending, drop the top floor(k_off * n),
    keep the next max(1, floor(k_keep * n)); ties in V are broken by position.
    """
    v = np.asarray(prompt_entropy, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"prompt_entropy must be 1-D, got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError("prompt_entropy has NaN: the forward pass produced no entropy for some prompts")
    if mode not in GATE_MODES:
        raise ValueError(f"hive.gate must be one of {', '.join(GATE_MODES)}, got {mode!r}")
    keep = np.zeros(v.shape, dtype=bool)
    if v.size == 0:
        return keep
    if mode == "median":
        return v >= np.median(v)
    skip, count = _band(v.size, k_off, k_keep)
    order = np.argsort(-v, kind="stable")
    keep[order[skip : skip + count]] = True
    return keep


class RunningPearson:
    """Running Pearson correlation of (prompt entropy, mean response entropy) pairs.

    Proxy validation of HIVE: if prompt entropy does not track response entropy in this
    domain, stage 2 is gating on noise. Sufficient statistics only, so it serialises.
    """

    FIELDS = ("n", "sx", "sy", "sxx", "syy", "sxy")

    def __init__(self) -> None:
        self.n = 0.0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def add(self, x: object, y: object) -> None:
        xs = np.asarray(x, dtype=np.float64).ravel()
        ys = np.asarray(y, dtype=np.float64).ravel()
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        self.n += xs.size
        self.sx += xs.sum()
        self.sy += ys.sum()
        self.sxx += (xs * xs).sum()
        self.syy += (ys * ys).sum()
        self.sxy += (xs * ys).sum()

    @property
    def value(self) -> float:
        """Pearson r, NaN until two distinct pairs are seen."""
        if self.n < 2:
            return float("nan")
        cov = self.sxy - self.sx * self.sy / self.n
        var_x = self.sxx - self.sx**2 / self.n
        var_y = self.syy - self.sy**2 / self.n
        if var_x <= 0 or var_y <= 0:
            return float("nan")
        return float(cov / np.sqrt(var_x * var_y))

    def state_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.FIELDS}

    def load_state_dict(self, state: dict[str, float]) -> None:
        for name in self.FIELDS:
            setattr(self, name, float(state[name]))
