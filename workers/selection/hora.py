"""HORA: hit-utility optimal rollout allocation (papers/001, docs/algorithms.md §4).

After a probe of ``n_pre`` rollouts per prompt with ``s_i`` successes, the pass rate has
posterior Beta(a_i, b_i), a_i = alpha + s_i, b_i = beta + n_pre - s_i. The marginal gain
of a prompt's m-th extra rollout in the probability of at least one hit is

    D(1) = a / (a + b),   D(m + 1) = D(m) * (b + m - 1) / (a + b + m),

strictly decreasing in m, so giving each extra rollout greedily to the largest current
gain is optimal (Proposition 3.1). The greedy order is the sort of all (prompt, m) gains
by (-gain, prompt, m), gains compared to 40 bits (``tie_key``); ``allocate`` takes its first
``extra_budget`` entries exactly, computing gains only as deep into each prompt's sequence as
the cut can reach.
"""

from __future__ import annotations

import math

import numpy as np


def posterior(
    successes: object, n_pre: int, prior: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Beta posterior (a, b) of each prompt's pass rate after ``n_pre`` probe rollouts."""
    s = np.asarray(successes)
    alpha, beta = float(prior[0]), float(prior[1])
    if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"hora.prior must be two positive numbers, got {prior}")
    if n_pre < 1:
        raise ValueError(f"hora.n0 (probe rollouts per prompt) must be >= 1, got {n_pre}")
    if s.ndim != 1 or not np.all(np.isfinite(s)) or not np.all(s == np.round(s)):
        raise ValueError("successes must be a 1-D array of whole counts, one per prompt")
    if s.size and (s.min() < 0 or s.max() > n_pre):
        raise ValueError(f"successes must lie in [0, n0={n_pre}], got {s.min()}..{s.max()}")
    s = s.astype(np.float64)
    return alpha + s, beta + n_pre - s


def _gains(a: np.ndarray, b: np.ndarray, first: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """Gains D(start) .. D(start + width - 1) per row, given ``first`` = D(start) per row.

    The product is accumulated left to right: the same multiplications as the recursion,
    so the values are bit-identical to a loop over m.
    """
    m = start[:, None].astype(np.float64) + np.arange(width - 1, dtype=np.float64)[None, :]
    table = np.empty((a.shape[0], width))
    table[:, 0] = first
    if width > 1:
        table[:, 1:] = (b[:, None] + m - 1.0) / (a[:, None] + b[:, None] + m)
        np.cumprod(table, axis=1, out=table)
    return table


def marginal_gain(a: object, b: object, m: object) -> np.ndarray:
    """D(m) = U(m) - U(m - 1) for Beta(a, b), by the stable recursion (m >= 1, broadcast)."""
    a_arr, b_arr, m_arr = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(m)
    )
    if m_arr.size and m_arr.min() < 1:
        raise ValueError("m counts extra rollouts and starts at 1")
    flat_a, flat_b, flat_m = a_arr.ravel(), b_arr.ravel(), m_arr.ravel().astype(np.int64)
    if flat_m.size == 0:
        return np.zeros(a_arr.shape)
    ones = np.ones(flat_a.shape[0], dtype=np.int64)
    table = _gains(flat_a, flat_b, flat_a / (flat_a + flat_b), ones, int(flat_m.max()))
    return table[np.arange(flat_m.size), flat_m - 1].reshape(a_arr.shape)


def hit_utility(a: object, b: object, m: object) -> np.ndarray:
    """U(m) = 1 - B(a, b + m) / B(a, b): probability of at least one hit in m more rollouts."""
    a_arr, b_arr, m_arr = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(m)
    )
    out = np.zeros(a_arr.shape)
    for pos in np.ndindex(a_arr.shape):
        count = int(m_arr[pos])
        if count > 0:
            out[pos] = marginal_gain(a_arr[pos], b_arr[pos], np.arange(1, count + 1)).sum()
    return out


def allocate(
    successes: object,
    n_pre: int,
    extra_budget: int,
    prior: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Extra rollouts per prompt (ints summing to ``extra_budget``) maximising total hit utility.

    Exact greedy: ties go to the lowest prompt index. Worked example (docs/algorithms.md §4):
    s = [0, 1, 4, 8], n_pre = 8, budget 96 -> [51, 30, 11, 4].
    """
    a, b = posterior(successes, n_pre, prior)
    n_prompts = a.shape[0]
    if extra_budget < 0:
        raise ValueError(f"extra rollout budget must be >= 0, got {extra_budget}")
    if extra_budget == 0:
        return np.zeros(n_prompts, dtype=np.int64)
    if n_prompts == 0:
        raise ValueError(f"cannot spend {extra_budget} extra rollouts on an empty batch")

    # Start each row as deep as an even split; deepen only rows the cut takes whole.
    width0 = min(extra_budget, -(-extra_budget // n_prompts) + 1)
    head = _gains(a, b, a / (a + b), np.ones(n_prompts, dtype=np.int64), width0)
    values = [head.ravel()]
    rows = [np.repeat(np.arange(n_prompts), width0)]
    depth = np.full(n_prompts, width0, dtype=np.int64)
    last = head[:, -1].copy()
    while True:
        flat_values = values[0] if len(values) == 1 else np.concatenate(values)
        flat_rows = rows[0] if len(rows) == 1 else np.concatenate(rows)
        chosen = _top_in_greedy_order(flat_values, flat_rows, extra_budget)
        counts = np.bincount(flat_rows[chosen], minlength=n_prompts)
        saturated = np.flatnonzero((counts == depth) & (depth < extra_budget))
        if saturated.size == 0:
            return counts.astype(np.int64)
        # Those rows might have more gains above the cut: extend them (doubling).
        grow = np.minimum(depth[saturated], extra_budget - depth[saturated])
        width = int(grow.max())
        sa, sb = a[saturated], b[saturated]
        first = last[saturated] * (sb + depth[saturated] - 1.0) / (sa + sb + depth[saturated])
        extension = _gains(sa, sb, first, depth[saturated] + 1, width)
        keep = np.arange(width)[None, :] < grow[:, None]
        values.append(extension[keep])
        rows.append(np.repeat(saturated, grow))
        last[saturated] = extension[np.arange(saturated.size), grow - 1]
        depth[saturated] += grow


def tie_key(values: np.ndarray) -> np.ndarray:
    """Gains rounded to a 40-bit mantissa: equal gains computed along different paths
    (e.g. Beta(5, 5) at m = 6 and Beta(6, 4) at m = 5) differ in their last bits, and
    must count as a tie so the lower prompt index wins, as the greedy rule says."""
    mantissa, exponent = np.frexp(values)
    rounded: np.ndarray = np.ldexp(np.round(mantissa * 2.0**40), exponent - 40)
    return rounded


def _top_in_greedy_order(values: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """Positions of the first ``count`` entries in (-gain, row, m) order.

    Entries of one row appear in increasing m, so among equal gains the earlier
    position of the same row is the smaller m; ties across rows go to the lower row.
    """
    if count >= values.shape[0]:
        return np.arange(values.shape[0])
    values = tie_key(values)
    cut = np.partition(values, values.shape[0] - count)[values.shape[0] - count]
    above = np.flatnonzero(values > cut)
    tied = np.flatnonzero(values == cut)
    need = count - above.shape[0]
    order = np.lexsort((tied, rows[tied]))  # by row, then position (= m within a row)
    return np.concatenate([above, tied[order[:need]]])


def rollout_weights(group_sizes: object) -> np.ndarray:
    """Per-prompt loss weight 1 / G_i so that every prompt weighs the same (variable groups)."""
    sizes = np.asarray(group_sizes, dtype=np.float64)
    if sizes.size and sizes.min() < 1:
        raise ValueError("group sizes must be >= 1")
    return 1.0 / sizes
