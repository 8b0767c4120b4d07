"""frontend/downsample.py: long series cut to what a chart can show, extremes kept."""

from __future__ import annotations

import math
import random

import pytest

from frontend.downsample import MIN_POINTS, bucket_bounds, minmax


def series(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    return {"step": list(range(0, 3 * n, 3)), "a": [rng.uniform(-5, 5) for _ in range(n)],
            "nested": {"b": [rng.randint(0, 100) for _ in range(n)]}, "status": "running", "next_after": 7}


def test_a_short_series_is_sent_as_it_is_and_says_so():
    data = series(10)
    out = minmax(data, 10)
    assert out["step"] == data["step"] and out["a"] == data["a"] and out["nested"] == data["nested"]
    assert (out["downsampled"], out["points_from"], out["points_sent"]) == (False, 10, 10)


@pytest.mark.parametrize("n", [5, 6, 7, 50, 333, 1000])
@pytest.mark.parametrize("points", [4, 5, 9, 60, 301])
def test_the_size_is_bounded_first_and_last_kept_x_increasing_and_every_bucket_keeps_its_extremes(n, points):
    data = series(n, seed=n * 1000 + points)
    out = minmax(data, points)
    if n <= points:
        assert out["downsampled"] is False and out["step"] == data["step"]
        return
    assert out["downsampled"] is True and out["points_from"] == n
    assert len(out["step"]) == out["points_sent"] <= points
    assert all(len(out[c]) == len(out["step"]) for c in ("a",)) and len(out["nested"]["b"]) == len(out["step"])
    # first and last rows as they were
    assert (out["step"][0], out["a"][0], out["nested"]["b"][0]) == (0, data["a"][0], data["nested"]["b"][0])
    assert (out["step"][-1], out["a"][-1]) == (data["step"][-1], data["a"][-1])
    # x strictly increasing, and only x values that exist
    assert all(x0 < x1 for x0, x1 in zip(out["step"], out["step"][1:]))
    assert set(out["step"]) <= set(data["step"])
    # the whole series' extremes, and each bucket's, are in the answer
    for column, values, sent in (("a", data["a"], out["a"]), ("b", data["nested"]["b"], out["nested"]["b"])):
        assert max(values) in sent and min(values) in sent, column
        for a, b in bucket_bounds(n, points):
            assert max(values[a:b]) in sent and min(values[a:b]) in sent, (column, a, b)
    # scalars pass through
    assert out["status"] == "running" and out["next_after"] == 7


def test_a_spike_keeps_its_order_up_then_down():
    ys = [0.0] * 40
    ys[10], ys[12] = 9.0, -9.0  # up, then down, inside one bucket
    out = minmax({"step": list(range(40)), "y": ys}, 4)
    assert out["y"] == [0.0, 9.0, -9.0, 0.0]
    ys[10], ys[12] = -9.0, 9.0
    assert minmax({"step": list(range(40)), "y": ys}, 4)["y"] == [0.0, -9.0, 9.0, 0.0]


def test_gaps_stay_gaps_and_nan_is_never_sent():
    n = 100
    ys = [float(i) for i in range(n)]
    for i in range(20, 60):
        ys[i] = None  # a long gap: the buckets inside it are empty
    ys[70] = math.nan
    ys[0] = math.nan
    out = minmax({"step": list(range(n)), "y": ys}, 20)
    assert out["y"][0] is None  # the first row kept, its NaN as a gap
    assert not any(isinstance(v, float) and math.isnan(v) for v in out["y"] if v is not None)
    inside = [v for x, v in zip(out["step"], out["y"]) if 25 <= x <= 54]
    assert inside and all(v is None for v in inside)
    assert 19.0 in out["y"] and 60.0 in out["y"] and 99.0 in out["y"]  # extremes around the gap kept
    assert 70.0 not in out["y"]


def test_labels_keep_the_bucket_ends_and_points_below_the_minimum_count_as_the_minimum():
    n = 30
    out = minmax({"step": list(range(n)), "bucket": [f"b{i}" for i in range(n)]}, 1)
    assert len(out["step"]) <= MIN_POINTS and out["bucket"][0] == "b0" and out["bucket"][-1] == f"b{n - 1}"
    assert all(v == f"b{x}" for x, v in zip(out["step"], out["bucket"]))
