"""The engine benchmarks run end to end at their smallest and write every figure; the
rollout-savings series and target reach are computed from events as documented."""

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.rollout_savings import METHODS, EvalPoint, reach, summarise

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_engine_throughput_bench_measures_engine_bare_loop_update_and_train_step(tmp_path):
    result = run_bench("engine_throughput.py", "--tiny", "--var", str(tmp_path / "var"), "--out", str(tmp_path))
    payload = json.loads((tmp_path / "engine_throughput.json").read_text())
    figures = payload["figures"]
    for name in ("engine_samples_per_s", "engine_tokens_per_s", "bare_samples_per_s", "bare_tokens_per_s",
                 "ratio_engine_over_bare", "update_seconds", "train_step_seconds"):
        assert figures[name] > 0, name
    assert figures["rows"] == payload["prompts"] * payload["group_size"]
    assert set(figures["train_step_phase_seconds"]) == {"select", "generate", "reward", "update"}
    assert "engine / bare" in result.stdout and "within 1.3x" in result.stdout


def test_rollout_savings_bench_writes_every_method_and_a_self_contained_report(tmp_path):
    methods = list(METHODS)
    result = run_bench("rollout_savings.py", "--tiny", "--var", str(tmp_path / "var"), "--out", str(tmp_path))
    payload = json.loads((tmp_path / "rollout_savings_tiny.json").read_text())
    assert set(payload["methods"]) == set(methods)
    steps = payload["sizes"]["steps"]
    uniform = payload["sizes"]["batch_size"] * payload["sizes"]["group_size"] * steps
    for name in methods:
        m = payload["methods"][name]
        assert m["status"] == "succeeded" and m["steps"] == steps
        assert m["rollouts_uniform"] == uniform
        assert m["rollouts_generated"] > 0 and m["tokens_generated"] >= m["rollouts_generated"]
        assert m["rollout_savings"] == 1 - m["rollouts_generated"] / uniform
        assert 0 <= m["effective_share_of_generated"] <= 1
        assert m["wall_seconds"] > 0 and m["train_seconds"] > 0
        assert [e["step"] for e in m["evaluations"]] == list(range(steps + 1))
        assert m["evaluations"][0]["rollouts_generated"] == 0
        assert m["evaluations"][-1]["rollouts_generated"] == m["rollouts_generated"]
        assert m["final_pass_at_1"] == m["evaluations"][-1]["pass_at_1"]
        assert set(m["to_target"]) >= {"reached", "rollouts_generated", "train_seconds"}
    # Every run starts from the same warmed-up weights and the same evaluation seed.
    assert len({payload["methods"][n]["evaluations"][0]["pass_at_1"] for n in methods}) == 1
    assert payload["methods"]["grpo"]["to_target"]["reached"]  # the default target is grpo's own final Pass@1
    page = (tmp_path / "rollout_savings_tiny.html").read_text()
    assert "Plotly" in page and len(page) > 1_000_000  # the plotly.js bundle is inline
    assert not re.search(r"<script[^>]+src=", page, re.IGNORECASE)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", page, re.IGNORECASE)
    for name in methods:
        assert name in page and name in result.stdout
    assert "Pass@1 vs rollouts generated" in page


def point(step: int, rollouts: int, pass_at_1: float) -> EvalPoint:
    return EvalPoint(step, rollouts, rollouts * 5, step * 1.5, pass_at_1, pass_at_1)


def test_target_reach_is_the_first_evaluation_at_or_above_the_target():
    points = [point(0, 0, 0.1), point(5, 640, 0.25), point(10, 1280, 0.3), point(15, 1920, 0.2)]
    hit = reach(points, 0.25)
    assert (hit.reached, hit.step, hit.rollouts_generated, hit.train_seconds) == (True, 5, 640, 7.5)
    assert reach(points, 0.31).reached is False
    assert reach(points, 0.31).rollouts_generated is None


def test_summary_counts_what_was_spent_before_each_evaluation():
    def step(i: int, generated: int) -> dict:
        return {"event": "step", "step": i, "alerts": [], "summary": {
            "rollouts_generated": generated, "tokens_generated": generated * 4, "device_seconds": 2.0,
            "seconds": {"select": 0.5, "generate": 1.0, "reward": 0.0, "update": 0.5},
            "rollouts_effective": generated // 2, "rollouts_uniform": 64, "rollouts_trained": 32,
            "groups_all_correct": 1, "groups_all_wrong": 2, "groups_generated": 8}}

    def evaluation(i: int, p1: float) -> dict:
        return {"event": "evaluation", "step": i, "k": 4, "pass_at_1": p1, "pass_at_k": p1 + 0.1}

    events = [evaluation(0, 0.1), step(0, 96), step(1, 32), evaluation(2, 0.2), step(2, 64), evaluation(3, 0.3),
              {"event": "run_finished", "status": "succeeded", "reason": ""}]
    result = summarise("x", {"grpo": {}}, events, wall_seconds=9.0)
    assert [(p.step, p.rollouts_generated, p.train_seconds) for p in result.evaluations] == [
        (0, 0, 0.0), (2, 128, 4.0), (3, 192, 6.0)]
    assert result.rollouts_generated == 192 and result.rollouts_uniform == 192
    assert result.rollout_savings == 0.0
    assert result.effective_share_of_generated == 96 / 192
    assert result.seconds_by_phase == {"select": 1.5, "generate": 3.0, "reward": 0.0, "update": 1.5}
    assert (result.final_pass_at_1, result.eval_k, result.status) == (0.3, 4, "succeeded")


def test_every_method_of_the_issue_is_in_the_bench():
    assert set(METHODS) == {"grpo", "dapo", "greso", "hive", "hora", "rlzvp", "lze", "lze+prune", "hive+hora+rlzvp"}
