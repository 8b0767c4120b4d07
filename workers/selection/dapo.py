"""DAPO dynamic sampling's post-filter (docs/algorithms.md §1).

Zero-variance groups carry no GRPO signal and are dropped; mixed groups fill the batch
up to B; mixed groups beyond B are surplus, counted as generated and dropped. The
pipeline draws more generation batches while the batch is short.
"""

from __future__ import annotations

import numpy as np

KEEP, ZERO_VARIANCE, SURPLUS = 0, 1, 2


def post_filter(zero_variance: object, room: int) -> np.ndarray:
    """Per group in arrival order: KEEP, ZERO_VARIANCE or SURPLUS, with ``room`` places left."""
    zv = np.asarray(zero_variance, dtype=bool)
    out = np.where(zv, ZERO_VARIANCE, KEEP).astype(np.int8)
    mixed = np.flatnonzero(~zv)
    out[mixed[max(room, 0):]] = SURPLUS
    return out
