"""bench/dashboard_latency.py runs end to end at a tiny size and writes every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_dashboard_latency_bench_times_every_page_and_endpoint(live_database_url, tmp_path):
    if not live_database_url.startswith("postgres"):
        pytest.skip("the bench fills its run with Postgres generate_series")
    env = {**os.environ, "DATABASE_URL": live_database_url}
    result = subprocess.run(
        [sys.executable, "bench/dashboard_latency.py", "--steps", "12", "--batch", "8", "--decisions", "480",
         "--prompts", "50", "--repeats", "1", "--no-browser", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "dashboard_latency.json").read_text())
    assert set(figures["median"]["first_read_ms"]) == {"series", "evaluations", "actions", "hora", "heatmap",
                                                       "energy", "edge_at_step", "edge_now", "recent"}
    assert figures["median"]["pages_ms"]["run_page"] > 0
    assert figures["size"]["decisions"] == 480 and "run page < 1000 ms" in result.stdout
