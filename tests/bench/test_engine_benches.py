"""The engine benchmarks run end to end at their smallest and write every figure; the
rollout-savings series and target reach are computed from events as documented."""

import json

import pytest

from bench.rollout_savings import (
    METHODS,
    PROTOCOLS,
    area,
    crossing,
    interval,
    summarise,
    value_at,
    verdict,
)
from tests.bench.helpers import run_bench


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


def test_rollout_savings_bench_runs_every_protocol_over_seeds_and_writes_verdicts(tmp_path):
    result = run_bench("rollout_savings.py", "--tiny", "--jobs", "2", "--var", str(tmp_path / "var"),
                       "--out", str(tmp_path))
    payload = json.loads((tmp_path / "rollout_savings_tiny.json").read_text())
    seeds = payload["seeds"]
    assert len(seeds) >= 2  # intervals need more than one seed
    expected = {f"{m}-{PROTOCOLS[p][1]}-s{s}" for p in PROTOCOLS for m in PROTOCOLS[p][0] for s in seeds}
    assert set(payload["runs"]) == expected
    for name, run in payload["runs"].items():
        assert run["status"] == "succeeded", name
        assert run["rollouts_generated"] > 0 and run["flops_estimate"] > 0
        assert run["evaluations"][0]["rollouts"] == 0
        assert run["evaluations"][-1]["rollouts"] == run["rollouts_generated"]
        assert run["rollout_savings"] == pytest.approx(1 - run["rollouts_generated"] / run["rollouts_uniform"])
    assert set(payload["calibration"]["checks"]) == {"edge levels", "partial levels", "unsolved levels",
                                                     "zero-variance share in range"}
    assert set(payload["claims"]) == {"filters", "lze", "hora", "rlzvp"}
    verdicts = [payload["claims"]["filters"]["methods"][m]["verdict"] for m in ("greso", "hive", "hive_lam0.5")]
    verdicts += [s["verdict"] for s in payload["claims"]["hora"]["settings"].values()]
    verdicts.append(payload["claims"]["rlzvp"]["verdict"])
    assert set(payload["claims"]["lze"]["pools"]) == {"main", "edge"}
    verdicts += [pool["verdict_compute"] for pool in payload["claims"]["lze"]["pools"].values()]
    verdicts.append(payload["claims"]["lze"]["pruner"]["verdict"])
    assert all(v.split(" (")[0] in {"reproduced", "not reproduced", "inconclusive", "not testable here"}
               for v in verdicts), verdicts
    # every run of a seed starts from the one warm start, evaluated with the same seed
    starts = {run["evaluations"][0]["pass_at_1"] for name, run in payload["runs"].items()
              if name.endswith("-main-s0")}
    assert len(starts) == 1
    png = (tmp_path / "rollout_savings_tiny.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 500_000
    assert "P1 filters vs DAPO" in result.stdout and "P3 HORA" in result.stdout
    pruner = payload["claims"]["lze"]["pruner"]
    assert pruner["pool_prompts"] == 16 and set(pruner) >= {"prompts_pruned_at_the_end", "epochs_compared"}
    # --reanalyse recomputes the claims from the runs' events, training nothing
    again = run_bench("rollout_savings.py", "--tiny", "--reanalyse", "--var", str(tmp_path / "var"),
                      "--out", str(tmp_path))
    assert "ran " not in again.stdout
    reread = json.loads((tmp_path / "rollout_savings_tiny.json").read_text())
    assert reread["claims"] == payload["claims"] and reread["runs"].keys() == payload["runs"].keys()
    # --resume keeps every run already trained and trains none again
    resumed = run_bench("rollout_savings.py", "--tiny", "--resume", "--var", str(tmp_path / "var"),
                        "--out", str(tmp_path))
    assert "ran " not in resumed.stdout and f"{len(expected)} runs kept, 0 to train" in resumed.stdout


def test_the_statistics_on_known_numbers():
    two = interval([0.1, 0.3])
    assert two["mean"] == pytest.approx(0.2)
    assert two["high"] - two["mean"] == pytest.approx(12.706 * 0.1414213 / 1.4142135, rel=1e-4)
    assert interval([0.5])["low"] is None and interval([])["mean"] is None
    assert verdict({"mean": 0.2, "low": 0.1, "high": 0.3}) == "reproduced"
    assert verdict({"mean": -0.2, "low": -0.3, "high": -0.1}) == "not reproduced"
    assert verdict({"mean": 0.1, "low": -0.1, "high": 0.3}).startswith("inconclusive")
    assert verdict({"mean": None, "low": None, "high": None}) == "not testable here"
    # piecewise-linear reading of Pass@1 against rollouts
    xs, ys = [0, 100, 200], [0.2, 0.3, 0.5]
    assert crossing(xs, ys, 0.4) == pytest.approx(150)
    assert crossing(xs, ys, 0.6) is None and crossing(xs, ys, 0.1) == 0
    assert value_at(xs, ys, 50) == pytest.approx(0.25) and value_at(xs, ys, 300) is None
    assert area(xs, ys, 200) == pytest.approx((0.25 * 100 + 0.4 * 100) / 200, abs=2e-3)


def test_summary_counts_what_was_spent_before_each_evaluation():
    def step(i, generated, ds):
        return {"event": "step", "step": i, "alerts": [], "observations": [], "summary": {
            "rollouts_generated": generated, "rollouts_uniform": 64, "tokens_generated": generated * 2,
            "backward_tokens": 10, "backward_prompt_tokens": 20, "backward_tokens_mixed": 20, "flops_estimate": 100.0,
            "flops_uniform_estimate": 100.0, "rollouts_effective": 8, "device_seconds": 1.0,
            "rollouts_dynamic_sampling": ds, "groups_trained": 8, "groups_mixed_collected": 8,
            "metrics": {"selection/groups_collected": 8}}}
    events = [{"event": "run_started", "config": {"batch_size": 16}},
              {"event": "evaluation", "step": 0, "pass_at_1": 0.1, "pass_at_k": 0.2},
              step(0, 96, "NaN"), step(1, 32, 64.0),
              {"event": "evaluation", "step": 2, "pass_at_1": 0.3, "pass_at_k": 0.4},
              {"event": "run_finished", "status": "succeeded"}]
    result = summarise(events, 2.0, parameters=10)
    assert [p["rollouts"] for p in result["evaluations"]] == [0, 128]
    assert result["rollout_savings"] == pytest.approx(1 - 128 / 128)
    # only the step with an estimate counts against dynamic sampling
    assert result["rollout_savings_vs_dynamic_sampling"] == pytest.approx(1 - 32 / 64)
    assert result["backward_savings_vs_mixed"] == pytest.approx(0.5)
    assert result["backward_flops"] == pytest.approx(6 * 10 * (20 + 40))
    assert result["short_steps"] == 2  # 8 groups collected of B = 16 on both steps: both short


def test_every_method_of_the_issue_is_in_the_bench():
    assert {"grpo", "dapo", "greso", "hive", "hora", "rlzvp", "lze"} <= set(METHODS)
