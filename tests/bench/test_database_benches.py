"""The database benches of docs/telemetry_scale.md that no other test runs, at their smallest on the
test database: bench/budget_answer.py (the budget answer against the ledger it replaced, checked
equal inside the bench) and bench/state_upsert.py (the epoch end's prompt-state upsert and its
variants on a copy of the real table). Each must run through and write the figures it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def run_bench(script: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    if not database_url.startswith("postgres"):
        pytest.skip(f"bench/{script} needs Postgres")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {"DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_budget_answer_bench_times_both_answers_and_the_step(live_database_url, tmp_path):
    done = run_bench("budget_answer.py", live_database_url, "--sizes", "2000", "--steps", "2", "--repeats", "2",
                     "--out", str(tmp_path))
    written = json.loads((tmp_path / "budget_answer.json").read_text())
    figures = written["figures"]["2000"]
    assert written["tree_has_usage_days"] is True
    assert figures["ledger_entries"] == 2000
    assert figures["usage_days"] == 2000  # 100 runs x 20 steps, each a day and a half apart: one a day
    for name in ("budget_status_ms", "ledger_sum_ms"):
        assert figures[name]["n"] == 2 and 0 < figures[name]["min"] <= figures[name]["median"]
    assert figures["step_ms"]["n"] == 2
    assert "2,000 ledger entries (2000 usage days)" in done.stdout


def test_state_upsert_bench_times_every_variant_on_the_real_table(live_database_url, tmp_path):
    run_bench("state_upsert.py", live_database_url, "--states", "2000", "--repeats", "1", "--explain",
              "--out", str(tmp_path))
    written = json.loads((tmp_path / "state_upsert.json").read_text())
    variants = written["variants"]
    assert set(variants) == {"as_now", "no_bucket_index", "sorted", "update_from", "icu_key", "as_now_explain"}
    for name in ("as_now", "no_bucket_index", "sorted", "update_from", "icu_key"):
        assert len(variants[name]["statement_s"]) == 1 and variants[name]["statement_s"][0] > 0
    plan = "\n".join(variants["as_now_explain"])
    assert "Conflicting Tuples: 2000" in plan and "WAL:" in plan  # every state existed: all updated
    assert {"state_run_recent_map"} <= set(written["indexes_of_the_model"])
