"""The benchmark script runs end to end (small sizes) and writes its figures."""

import json

from tests.bench.helpers import run_bench


def test_selection_overhead_bench_prints_and_writes_every_figure(tmp_path):
    result = run_bench("selection_overhead.py", "--prompts", "60000", "--repeats", "1", "--out", str(tmp_path))
    figures = json.loads((tmp_path / "selection_overhead.json").read_text())["median_ms"]
    assert set(figures) >= {"lze_score_select_1m", "stage1_1m", "ledger_update_1024", "hora_1024x24"}
    assert all(value > 0 for value in figures.values())
    assert "hora_1024x24" in result.stdout
