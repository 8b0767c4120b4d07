"""The database benches of docs/telemetry_scale.md that no other test runs, at their smallest on the
test database: bench/budget_answer.py (the budget answer against the ledger it replaced, checked
equal inside the bench), bench/state_upsert.py (the epoch end's prompt-state upsert and its
variants on a copy of the real table) and bench/copy_ceiling.py (COPY alone, CSV and binary, with
and without the decision table's indexes; the rows counted inside the bench) and
bench/telemetry_drop.py (a run's removal, the purge after it, a plain DELETE). Each must run
through and write the figures it prints."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.bench import helpers

pytestmark = [pytest.mark.slow]


def run_bench(script: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    if not database_url.startswith("postgres"):
        pytest.skip(f"bench/{script} needs Postgres")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {"DATABASE_URL": database_url}
    return helpers.run_bench(script, *args, env=env)


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


def test_copy_ceiling_bench_times_each_format_with_and_without_indexes(live_database_url, tmp_path):
    done = run_bench("copy_ceiling.py", live_database_url, "--rows", "3000", "--repeats", "1", "--out", str(tmp_path))
    written = json.loads((tmp_path / "copy_ceiling.json").read_text())
    assert written["rows"] == 3000
    assert set(written["figures"]) == {f"{form}{suffix}" for form in ("csv", "binary", "binary_sorted")
                                       for suffix in ("", "_no_index")}
    for figures in written["figures"].values():
        assert len(figures["seconds"]) == 1 and figures["seconds"][0] > 0 and figures["rows_per_s_median"] > 0
    assert "median rows/s: csv " in done.stdout


def test_telemetry_ingest_bench_times_both_paths_on_a_quiet_database(live_database_url, tmp_path):
    done = run_bench("telemetry_ingest.py", live_database_url, "--steps", "2", "--prompts", "16", "--epoch-rows", "300",
                     "--epoch-repeats", "1", "--out", str(tmp_path))
    written = json.loads((tmp_path / "telemetry_ingest.json").read_text())
    figures = written["figures"]
    for path in ("in_process", "http"):
        assert figures[f"{path}_step_ms"]["n"] == 2 and figures[f"{path}_epoch_ms"]["n"] == 1
    assert figures["http_over_in_process_step"]["median"] > 0
    assert set(written["quiet_waits_s"]) == {"in_process_step", "http_step", "in_process_epoch", "http_epoch",
                                             "replay"}
    assert written["rows"] == {"step": 48, "epoch": 300} and not written["refused"]
    assert "seconds waited" in done.stdout


def test_telemetry_retention_bench_archives_and_reads_the_charts_back_the_same(live_database_url, tmp_path):
    done = run_bench("telemetry_retention.py", live_database_url, "--decisions", "4000", "--observations", "2000",
                     "--prompts", "100", "--keys", "2", "--repeats", "1", "--out", str(tmp_path))
    written = json.loads((tmp_path / "telemetry_retention.json").read_text())
    assert written["decisions"] == 4000 and written["observations"] == 2000
    assert written["postgres_table_bytes_before"] > 0 and written["archive_file_bytes"] > 0
    assert set(written["chart_reads_ms"]) == {"energy at a step", "learning-edge map at a step",
                                              "heat map ranking, every step", "heat map cells, 50 prompts"}
    for reads in written["chart_reads_ms"].values():
        assert reads["postgres"] > 0 and reads["parquet"] > 0
    assert "archive_rows_per_second" in done.stdout


def test_telemetry_drop_bench_times_the_detach_the_purge_and_the_plain_delete(live_database_url, tmp_path):
    done = run_bench("telemetry_drop.py", live_database_url, "--sizes", "2000", "--repeats", "2",
                     "--out", str(tmp_path))
    (size,) = json.loads((tmp_path / "telemetry_drop.json").read_text())["sizes"]
    assert size["rows_per_run"] == 2000
    for figure in ("run_rows_drop", "dropped_partitions_purge", "plain_delete"):
        assert size[figure]["repeats"] == 2 and size[figure]["min_ms"] > 0, figure
    assert "2,000 rows: drop " in done.stdout
