"""Evaluation metrics shared by every engine."""

from __future__ import annotations

import math

import numpy as np


def pass_at_k(n: object, c: object, k: int) -> np.ndarray | float:
    """Unbiased Pass@k (Chen et al. 2021): ``1 - C(n - c, k) / C(n, k)``.

    n samples of which c are correct, per problem (scalars or arrays, broadcast).
    Computed in exact integer arithmetic, so it is exact for any n.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    out = np.empty(n_arr.shape)
    for pos in np.ndindex(n_arr.shape):
        total, correct = int(n_arr[pos]), int(c_arr[pos])
        if not 0 <= correct <= total:
            raise ValueError(f"need 0 <= c <= n, got n={total}, c={correct}")
        if total < k:
            raise ValueError(f"Pass@{k} needs at least {k} samples per problem, got n={total}")
        out[pos] = 1.0 - math.comb(total - correct, k) / math.comb(total, k)
    return float(out) if out.ndim == 0 else out
