"""Long series at the resolution a chart can show, keeping their extremes.

A chart some 600 pixels wide shows no more than a few hundred distinct x positions, so a run
of 10,000 steps need not send 10,000 rows a series. ``minmax`` cuts the rows to at most
``points`` and keeps what a reader looks for:

- the first and the last row as they are (the tiles read the newest value);
- in between, the rows fall into consecutive buckets; each bucket of two or more rows becomes
  two rows, at the bucket's first and last x, holding for every column its smallest and its
  largest value in the bucket, in the order they occurred (so a spike up then down still
  draws up then down). A column's extremes are its own: min/max are per column, the x they
  are drawn at is the bucket's (off by less than one bucket's width);
- a gap stays a gap: None (and NaN) values are skipped; a bucket without a value in a column
  is None there in both rows; x stays strictly increasing when it was.

Columns are the dashboard's (``frontend.charts``): lists with one entry per x value, nested in
dicts or not; anything else (status, cursor fields) passes through. Non-numeric columns keep
the bucket's first and last value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MIN_POINTS = 4  # the first and last rows and one bucket
MAX_POINTS = 20_000  # what a ?points= parameter may ask for


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def bucket_bounds(n: int, points: int) -> list[tuple[int, int]]:
    """Index ranges [a, b) of the interior rows 1..n-2, in at most (points - 2) // 2 buckets of
    nearly equal size (the first and last rows stay on their own)."""
    interior = n - 2
    if interior <= 0:
        return []
    buckets = max(1, min((points - 2) // 2, interior))
    return [(1 + interior * k // buckets, 1 + interior * (k + 1) // buckets) for k in range(buckets)]


def _clean(value: Any) -> Any:
    """NaN and infinities as None: a gap (JSON has no NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def pick_rows(values: list[Any], bounds: list[tuple[int, int]]) -> list[Any]:
    """One column cut to the rows ``minmax`` keeps (see the module docstring)."""
    out = [_clean(values[0])]
    for a, b in bounds:
        if b - a == 1:
            out.append(_clean(values[a]))
            continue
        chunk = range(a, b)
        numeric = [i for i in chunk if _finite(values[i])]
        if numeric:
            low = min(numeric, key=lambda i: values[i])
            high = max(numeric, key=lambda i: values[i])
            first, second = sorted((low, high))
            out.extend((values[first], values[second]))
        elif all(values[i] is None or isinstance(values[i], float) for i in chunk):
            out.extend((None, None))  # a gap through the whole bucket
        else:
            out.extend((values[a], values[b - 1]))  # labels, flags: the bucket's ends
    out.append(_clean(values[-1]))
    return out


def _rows_of_x(x: list[Any], bounds: list[tuple[int, int]]) -> list[Any]:
    out = [x[0]]
    for a, b in bounds:
        out.extend((x[a],) if b - a == 1 else (x[a], x[b - 1]))
    out.append(x[-1])
    return out


def _cut(value: Any, n: int, bounds: list[tuple[int, int]]) -> Any:
    if isinstance(value, list) and len(value) == n:
        return pick_rows(value, bounds)
    if isinstance(value, Mapping):
        return {k: _cut(v, n, bounds) for k, v in value.items()}
    return value


def minmax(columns: Mapping[str, Any], points: int, x: str = "step") -> dict[str, Any]:
    """``columns`` with at most ``points`` rows (see the module docstring), plus what the
    answer says about it: ``downsampled`` (whether rows were dropped), ``points_from`` (the rows
    there were) and ``points_sent``. ``points`` below ``MIN_POINTS`` counts as ``MIN_POINTS``.
    """
    xs = list(columns.get(x) or [])
    n = len(xs)
    points = max(int(points), MIN_POINTS)
    if n <= points:
        return {**columns, "downsampled": False, "points_from": n, "points_sent": n}
    bounds = bucket_bounds(n, points)
    out = {k: _cut(v, n, bounds) for k, v in columns.items() if k != x}
    out[x] = _rows_of_x(xs, bounds)
    return {**out, "downsampled": True, "points_from": n, "points_sent": len(out[x])}
