"""bench/json_body.py runs through at its smallest and writes every figure it prints."""

import json

from tests.bench.helpers import run_bench


def test_json_body_bench_times_the_client_and_the_server_side(tmp_path):
    result = run_bench("json_body.py", "--prompts", "50", "--repeats", "2", "--out", str(tmp_path))
    written = json.loads((tmp_path / "json_body.json").read_text())
    assert written["rows"] == 150 and written["json_bytes"] > 0
    figures = written["figures"]
    assert {"client_encode_event", "server_inflate", "server_json_loads", "server_depth_check"} <= set(figures)
    assert all(f["repeats"] == 2 and f["median_ms"] > 0 for f in figures.values())
    assert "server_depth_check" in result.stdout
