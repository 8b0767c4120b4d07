"""Each selection method's claim, tested on the embedded engine's testbed with room to act.

The testbed (RunConfig defaults): task add_aligned (reversed addition, equal-width operands,
2-6 digits), a 3 x 96 GPT warmed up once (supervised on a stream disjoint from the RL
prompts, then on answers with noisy digits: greedy right, sampling spread onto near misses),
a 4,100-prompt pool, B = 32, N = 8, lr 2e-4 with a 20-step warm-up. Every run of every seed
starts from that one cached warm start (``warmup_seed``); seeds vary the splits, sampling
and selection.

Before anything is compared, a calibration gate checks that RL has headroom here: at least
one edge level whose sampled Pass@1 lies in [0.4, 0.7] while greedy decoding is above 0.95,
one level at [0.02, 0.1], one unsolved level, and 40-60% zero-variance groups among the
pool's first groups. A failed gate stops the benchmark (--ignore-gate runs it anyway and
says so in the results).

Protocols (each a claim of a paper; docs/savings.md defines every figure):
- P1 filters: DAPO, GRESO, HIVE (lam 1, i.e. GRESO's stage 1, and lam 0.5) at equal steps.
  Rollouts and seconds to reach 90% of DAPO's Pass@1 gain (Pass@1 against rollouts read
  piecewise-linearly between evaluations), area under Pass@1 against rollouts, groups
  trained per step (short batches), HIVE's stage-2 proxy correlation, and the live
  estimate of savings against dynamic sampling beside the measured one.
- P2 LZE: GRPO, GRPO without zero-variance groups in the update (``lze`` with kappa = 1:
  every live group), LZE, and a random control (``lze`` with Gumbel noise so large that
  the K groups are a uniform draw of the live ones), at equal steps: backward FLOPs
  (prompt tokens included), the share of steps where K binds, Pass@1. The pruner at
  equal epochs on a small pool (``lze`` with and without ``prune``).
- P3 HORA: against GRPO at N = 16 (n0 = 4), the same rollouts per step; Pass@j curves to
  j = 32 at the end on the hard slice (levels below 0.1 sampled Pass@1 at calibration).
- P4 RL-ZVP: against GRPO at equal steps and rollouts, and against DAPO (at equal steps,
  and at GRPO's rollout budget read off DAPO's curve).
Each claim gets reproduced / not reproduced / inconclusive / not testable here, from 95%
intervals over seeds (t distribution), with the numbers and the mechanism.

Sizes: full (3 seeds, 90 steps, evaluation every 15 steps on 500 held-out prompts x 8),
--quick (1 seed, 30 steps, 200 prompts), --tiny (a one-layer model, a few steps: the test
suite). --jobs runs that many runs at once (one torch thread each on 2 cores).

Run: .venv/bin/python bench/rollout_savings.py [--quick | --tiny] [--jobs 2] [--var var]
Writes bench/results/rollout_savings[_MODE].json and .png (Pass@1 against rollouts per
method, mean over seeds with the 95% interval); each run's events go to --runs
(default VAR/bench/rollout_savings_MODE, outside git).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._timing import RESULTS, json_safe, write_results
from workers.engines.config import RunConfig
from workers.engines.telemetry import JsonlSink, read_events
from workers.selection import accounting

# Every run of the benchmark: a method's selectors.
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "grpo": {"grpo": {}},
    "dapo": {"dapo": {}},
    "greso": {"greso": {}},
    "hive": {"hive": {}},
    "hive_lam0.5": {"hive": {"lam": 0.5}},
    "rlzvp": {"rlzvp": {}},
    "lze": {"lze": {}},
    "grpo_no_zv": {"lze": {"kappa": 1.0, "min_ratio": 1.0}},  # every live group, none of the others
    "lze_random": {"lze": {"noise": 1e9}},  # K live groups drawn uniformly: the energy ranking's control
    "lze_prune": {"lze": {"prune": True}},
    "hora": {"hora": {"n0": 4}},
    "hora_n0_8": {"hora": {"n0": 8}},  # the paper's probe at N = 32
}
LABELS = {
    "grpo": "GRPO", "dapo": "DAPO (dynamic sampling)", "greso": "GRESO", "hive": "HIVE (lam 1)",
    "hive_lam0.5": "HIVE (lam 0.5)", "rlzvp": "RL-ZVP", "lze": "LZE", "grpo_no_zv": "GRPO without zero-variance groups",
    "lze_random": "random 40% of live groups", "lze_prune": "LZE with pruner", "hora": "HORA",
    "hora_n0_8": "HORA (n0 8)",
}
# protocol -> (runs, config overrides of the protocol as a function of the mode's sizes)
PROTOCOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "P1": (("dapo", "greso", "hive", "hive_lam0.5"), "main"),
    "P2": (("grpo", "grpo_no_zv", "lze", "lze_random"), "main"),
    "P2_edge": (("grpo", "grpo_no_zv", "lze", "lze_random"), "edge"),
    "P2_pruner": (("lze", "lze_prune"), "epochs"),
    "P3": (("grpo", "hora"), "wide"),
    "P3_paper": (("grpo", "hora_n0_8"), "wide32"),
    "P4": (("grpo", "rlzvp", "dapo"), "main"),
}
SIZES: dict[str, dict[str, Any]] = {
    "full": {"seeds": [0, 1, 2, 3], "main": {"steps": 120, "eval_every": 15, "eval_prompts": 500, "eval_k": 8},
             "epochs": {"task_train_size": 512, "steps": 96, "eval_every": 16, "eval_prompts": 500, "eval_k": 8},
             "wide": {"group_size": 16, "steps": 60, "eval_every": 60, "eval_prompts": 500, "eval_k": 64},
             "wide32": {"group_size": 32, "steps": 30, "eval_every": 30, "eval_prompts": 500, "eval_k": 64}},
    "quick": {"seeds": [0], "main": {"steps": 30, "eval_every": 10, "eval_prompts": 200, "eval_k": 8},
              "epochs": {"task_train_size": 256, "steps": 32, "eval_every": 16, "eval_prompts": 200, "eval_k": 8},
              "wide": {"group_size": 16, "steps": 20, "eval_every": 20, "eval_prompts": 200, "eval_k": 32},
              "wide32": {"group_size": 32, "steps": 10, "eval_every": 10, "eval_prompts": 200, "eval_k": 32}},
    "tiny": {"seeds": [0, 1], "base": {"model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 60,
                                       "warmup_noise_steps": 20, "task_train_size": 64, "task_test_size": 16,
                                       "batch_size": 8, "group_size": 4, "lr_warmup_steps": 2},
             "main": {"steps": 3, "eval_every": 1, "eval_prompts": 16, "eval_k": 4},
             "epochs": {"task_train_size": 16, "steps": 4, "eval_every": 2, "eval_prompts": 16, "eval_k": 4},
             "wide": {"group_size": 8, "steps": 2, "eval_every": 2, "eval_prompts": 16, "eval_k": 8},
             "wide32": {"group_size": 16, "steps": 1, "eval_every": 1, "eval_prompts": 16, "eval_k": 8}},
}
GATE = {"edge_sampled": (0.4, 0.7), "edge_greedy_min": 0.95, "partial_sampled": (0.02, 0.1),
        "unsolved_sampled_max": 0.02, "zero_variance_share": (0.4, 0.6)}
# "At equal accuracy": a method is refused the claim only when its final Pass@1 is worse than
# the comparison's by more than this, with 95% confidence (the interval's upper end below -margin).
NON_INFERIORITY_MARGIN = 0.01
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


# -- statistics --------------------------------------------------------------------------------
def interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% interval over seeds (t distribution); one value gives no interval."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(np.mean(v))
    if len(v) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = T95.get(len(v) - 1, 1.96) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(v)}


def crossing(xs: list[float], ys: list[float], target: float) -> float | None:
    """First x where the piecewise-linear curve through (xs, ys) reaches target, or None."""
    for i, y in enumerate(ys):
        if y >= target:
            if i == 0:
                return xs[0]
            x0, x1, y0 = xs[i - 1], xs[i], ys[i - 1]
            return x0 + (x1 - x0) * (target - y0) / (y - y0)
    return None


def value_at(xs: list[float], ys: list[float], x: float) -> float | None:
    """The curve's value at x (None beyond its end)."""
    if not xs or x > xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


def area(xs: list[float], ys: list[float], upto: float) -> float | None:
    """Mean Pass@1 over rollouts 0..upto (area under the curve / upto)."""
    if not xs or upto <= 0 or xs[-1] < upto:
        return None
    grid = np.linspace(0, upto, 200)
    return float(np.mean(np.interp(grid, xs, ys)))


# -- one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    method: str
    setting: str  # main, epochs or wide
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.setting}-s{self.seed}"


def run_config(spec: RunSpec, mode: str, lr: float | None, edge_levels: list[int]) -> dict[str, Any]:
    sizes = SIZES[mode]
    setting = sizes["main"] if spec.setting == "edge" else sizes[spec.setting]
    config = {**sizes.get("base", {}), **setting, "seed": spec.seed, "checkpoint_every": 0,
              "selectors": METHODS[spec.method]}
    if spec.setting == "edge":  # a pool whose live share is above LZE's kappa: the edge levels only
        config["task_levels"] = edge_levels
    if lr is not None:
        config["lr"] = lr
    return config


def run_one(args: tuple[RunSpec, dict[str, Any], str, str, int]) -> dict[str, Any]:
    """Train one run in this process; its figures come back from its events file."""
    spec, config, runs_dir, var_dir, threads = args
    import torch

    from workers.engines.local.engine import LocalEngine

    torch.set_num_threads(threads)
    out = Path(runs_dir) / spec.name
    shutil.rmtree(out, ignore_errors=True)
    sink = JsonlSink(out)
    engine = LocalEngine(RunConfig.from_mapping(config), out, sink, var_dir=var_dir)
    start = time.perf_counter()
    engine.run()
    return summarise(read_events(sink.path), time.perf_counter() - start, engine.policy.n_parameters)


def summarise(events: list[dict[str, Any]], wall_seconds: float, parameters: int) -> dict[str, Any]:
    """One run's figures (docs/savings.md): totals, the evaluation curve with what was spent."""
    steps = sorted((e for e in events if e["event"] == "step"), key=lambda e: e["step"])
    evaluations = sorted((e for e in events if e["event"] == "evaluation"), key=lambda e: e["step"])
    finished = [e for e in events if e["event"] == "run_finished"]
    started = [e for e in events if e["event"] == "run_started"]
    batch_size = int(started[0]["config"]["batch_size"]) if started else 0

    def num(value: Any) -> float:
        return float(value) if isinstance(value, (int, float)) else math.nan

    spent = {0: (0.0, 0.0, 0.0)}
    totals = dict.fromkeys(("rollouts_generated", "rollouts_uniform", "tokens_generated", "backward_tokens",
                            "backward_prompt_tokens", "backward_tokens_mixed", "flops_estimate",
                            "flops_uniform_estimate", "rollouts_effective"), 0.0)
    ds_generated = ds_needed = 0.0
    seconds = 0.0
    groups_trained, groups_collected, binds, alerts = [], [], [], []
    by_epoch: dict[int, dict[str, float]] = {}  # epoch -> what was spent by its end
    entropy, value = [], []
    for e in steps:
        s = e["summary"]
        for name in totals:
            totals[name] += num(s.get(name, 0))
        seconds += num(s["device_seconds"])
        ds = num(s.get("rollouts_dynamic_sampling"))
        if math.isfinite(ds) and ds > 0:
            ds_generated += s["rollouts_generated"]
            ds_needed += ds
        groups_trained.append(s["groups_trained"])
        groups_collected.append(s["metrics"].get("selection/groups_collected", s["groups_trained"]))
        binds.append(s["groups_mixed_collected"] > s["groups_trained"])
        alerts.extend(a for a in e.get("alerts", []) if a not in alerts)
        for o in e.get("observations", []):
            h = num(o.get("prompt_entropy"))
            if math.isfinite(h):
                entropy.append(h)
                value.append(o["pass_rate"] * (1 - o["pass_rate"]))
        spent[e["step"] + 1] = (totals["rollouts_generated"], seconds, totals["flops_estimate"])
        by_epoch[int(e.get("epoch", 0))] = {"steps": e["step"] + 1, "rollouts": totals["rollouts_generated"]}
    curve = []
    for e in evaluations:
        r, sec, flops = spent.get(e["step"], (totals["rollouts_generated"], seconds, totals["flops_estimate"]))
        curve.append({"step": e["step"], "rollouts": r, "train_seconds": sec, "flops": flops,
                      "pass_at_1": num(e["pass_at_1"]), "pass_at_k": num(e["pass_at_k"]),
                      "pass_at": e.get("pass_at", {}), "by_difficulty": e.get("by_difficulty", {})})
    p = parameters
    proxy = float(np.corrcoef(entropy, value)[0, 1]) if len(entropy) > 10 and np.std(value) > 0 else None
    return {
        "status": finished[-1]["status"] if finished else "unfinished", "steps": len(steps),
        "wall_seconds": wall_seconds, "train_seconds": seconds, "parameters": p, **totals,
        "rollout_savings": accounting.rollout_savings(totals["rollouts_generated"], totals["rollouts_uniform"]),
        "rollout_savings_vs_dynamic_sampling": accounting.rollout_savings_vs_dynamic_sampling(ds_generated, ds_needed),
        "backward_savings_vs_mixed": accounting.backward_savings_vs_mixed(totals["backward_tokens"],
                                                                          totals["backward_tokens_mixed"]),
        "backward_flops": 6.0 * p * (totals["backward_tokens"] + totals["backward_prompt_tokens"]),
        "effective_share_of_generated": accounting.effective_share_of_generated(totals["rollouts_effective"],
                                                                                totals["rollouts_generated"]),
        "groups_trained_per_step": groups_trained, "groups_collected_per_step": groups_collected,
        # against B from the run's config: a run short on every step must not count none
        "short_steps": sum(1 for g in groups_collected if g < batch_size),
        "selection_binds_share": float(np.mean(binds)) if binds else None,
        "prompt_entropy_correlation": proxy, "alerts": alerts[:20], "evaluations": curve,
        "final_metrics": steps[-1]["summary"]["metrics"] if steps else {},
        # the last epoch listed may be unfinished: equal-epoch comparisons use the completed ones
        "spent_by_epoch": {str(k): v for k, v in sorted(by_epoch.items())},
    }


# -- calibration gate --------------------------------------------------------------------------
def calibrate(mode: str, var_dir: Path, threads: int) -> dict[str, Any]:
    """Warm up once (cached), then measure per level greedy and sampled Pass@1 on the held-out
    split and the zero-variance share of N-rollout groups on the pool's first prompts."""
    import tempfile

    import torch

    from workers.engines.local.engine import LocalEngine
    from workers.engines.local.evaluate import evaluate

    torch.set_num_threads(threads)
    base = {**SIZES[mode].get("base", {}), **SIZES[mode]["main"]}
    with tempfile.TemporaryDirectory() as scratch:
        engine = LocalEngine(RunConfig.from_mapping(base), scratch, JsonlSink(scratch), var_dir=var_dir)
        warmup = engine._warm_up()
        c = engine.config
        g = torch.Generator().manual_seed(12345)
        kw = {"max_new_tokens": c.max_new_tokens, "temperature": c.temperature, "generator": g}
        greedy = evaluate(engine.policy, engine.test, engine.verifier, k=1, top_p=1e-9, **kw)
        sampled = evaluate(engine.policy, engine.test, engine.verifier, k=c.eval_k, top_p=c.top_p, **kw)
        pool = engine.train[: min(len(engine.train), 512)]
        groups = evaluate(engine.policy, pool, engine.verifier, k=c.group_size, top_p=c.top_p, **kw)
    levels = {}
    for tag in sorted(sampled["by_difficulty"]):
        levels[tag] = {"greedy_pass_at_1": greedy["by_difficulty"][tag]["pass_at_1"],
                       "sampled_pass_at_1": sampled["by_difficulty"][tag]["pass_at_1"]}
    zero_variance = groups["zero_variance_share"]
    lo, hi = GATE["edge_sampled"]
    edge = [t for t, v in levels.items() if lo <= v["sampled_pass_at_1"] <= hi
            and v["greedy_pass_at_1"] > GATE["edge_greedy_min"]]
    partial = [t for t, v in levels.items()
               if GATE["partial_sampled"][0] <= v["sampled_pass_at_1"] <= GATE["partial_sampled"][1]]
    unsolved = [t for t, v in levels.items() if v["sampled_pass_at_1"] < GATE["unsolved_sampled_max"]]
    zv_ok = GATE["zero_variance_share"][0] <= zero_variance <= GATE["zero_variance_share"][1]
    checks = {"edge levels": edge, "partial levels": partial, "unsolved levels": unsolved,
              "zero-variance share in range": zv_ok}
    return {"warmup": warmup, "levels": levels, "zero_variance_share": zero_variance,
            "all_correct_share": groups["all_correct_share"], "group_size": c.group_size,
            "pool_prompts": len(pool), "gate": GATE, "checks": checks,
            "passed": bool(edge and partial and unsolved and zv_ok),
            "hard_levels": [t for t, v in levels.items() if v["sampled_pass_at_1"] < 0.1]}


# -- verdicts ----------------------------------------------------------------------------------
def verdict(effect: dict[str, Any], *, better: str = "higher") -> str:
    """reproduced when the interval is on the claimed side of 0, not reproduced when on the
    other side, inconclusive when it spans 0 (or there is one seed)."""
    if effect["mean"] is None:
        return "not testable here"
    if effect["low"] is None:
        return "inconclusive (one seed)"
    low, high = (effect["low"], effect["high"]) if better == "higher" else (-effect["high"], -effect["low"])
    if low > 0:
        return "reproduced"
    if high < 0:
        return "not reproduced"
    return "inconclusive (the 95% interval spans 0)"


def per_seed(results: dict[str, dict[str, Any]], method: str, setting: str, seeds: list[int]) -> list[dict[str, Any]]:
    return [results[RunSpec(method, setting, s).name] for s in seeds if RunSpec(method, setting, s).name in results]


def final_pass_at_1(run: dict[str, Any]) -> float:
    return run["evaluations"][-1]["pass_at_1"]


def curve(run: dict[str, Any], x: str = "rollouts", y: str = "pass_at_1") -> tuple[list[float], list[float]]:
    return [p[x] for p in run["evaluations"]], [p[y] for p in run["evaluations"]]


SIZES_USED: dict[str, Any] = {}  # the mode's sizes, set by main()


def claim_filters(results, seeds) -> dict[str, Any]:
    out: dict[str, Any] = {"claim": "HIVE about 70% and GRESO about 52% fewer rollouts than dynamic sampling "
                                    "at equal accuracy (papers 001 and GRESO)", "methods": {}}
    dapo = per_seed(results, "dapo", "main", seeds)
    # The DAPO run against ideal dynamic sampling: what its rounds of 3B overshoot.
    out["dapo_live_estimate_vs_ideal_dynamic_sampling"] = interval(
        [r["rollout_savings_vs_dynamic_sampling"] for r in dapo])
    for method in ("greso", "hive", "hive_lam0.5"):
        runs = per_seed(results, method, "main", seeds)
        savings, seconds, p1_diff, auc_diff, live, measured = [], [], [], [], [], []
        for d, r in zip(dapo, runs):
            xs_d, ys_d = curve(d)
            start, gain = ys_d[0], ys_d[-1] - ys_d[0]
            p1_diff.append(r["evaluations"][-1]["pass_at_1"] - d["evaluations"][-1]["pass_at_1"])
            upto = min(xs_d[-1], curve(r)[0][-1])
            a_r, a_d = area(*curve(r), upto), area(xs_d, ys_d, upto)
            auc_diff.append(a_r - a_d if a_r is not None and a_d is not None else None)
            live.append(r["rollout_savings_vs_dynamic_sampling"])
            measured.append(1 - r["rollouts_generated"] / d["rollouts_generated"])
            if gain <= 0.02:
                continue  # DAPO did not learn here: no target to reach
            target = start + 0.9 * gain
            r_d, r_r = crossing(xs_d, ys_d, target), crossing(*curve(r), target)
            s_d, s_r = crossing(*curve(d, "train_seconds"), target), crossing(*curve(r, "train_seconds"), target)
            if r_d and r_r is not None:
                savings.append(1 - r_r / r_d)
            if s_d and s_r is not None:
                seconds.append(1 - s_r / s_d)
        effect = interval(savings)
        accuracy = interval(p1_diff)
        v = verdict(effect)
        if v == "reproduced" and accuracy["high"] is not None and accuracy["high"] < -NON_INFERIORITY_MARGIN:
            v = "not reproduced (fewer rollouts, but lower final Pass@1)"
        out["methods"][method] = {
            "rollout_savings_to_90pct_of_dapo_gain": effect, "seconds_savings_to_90pct_of_dapo_gain": interval(seconds),
            "seeds_reaching_target": len(savings), "final_pass_at_1_minus_dapo": accuracy,
            "area_under_pass_at_1_vs_rollouts_minus_dapo": interval(auc_diff),
            "rollout_savings_vs_dapo_run_at_equal_steps": interval(measured),
            "live_estimate_rollout_savings_vs_dynamic_sampling": interval(live),
            "groups_trained_per_step_mean": interval([float(np.mean(r["groups_trained_per_step"])) for r in runs]),
            "groups_trained_per_step_min": min((min(r["groups_trained_per_step"]) for r in runs), default=None),
            "short_steps": [r["short_steps"] for r in runs],
            "prompt_entropy_correlation": interval([r["prompt_entropy_correlation"] for r in runs]),
            "verdict": v,
        }
    return out


def claim_lze(results, seeds) -> dict[str, Any]:
    out: dict[str, Any] = {"claim": "LZE: about a third less training compute at equal accuracy (paper 003)",
                           "pools": {}}
    for setting in ("main", "edge"):
        if per_seed(results, "lze", setting, seeds):
            out["pools"][setting] = lze_backward(results, seeds, setting)
    out["verdict_compute"] = "; ".join(f"{k}: {v['verdict_compute']}" for k, v in out["pools"].items())
    prune, plain = per_seed(results, "lze_prune", "epochs", seeds), per_seed(results, "lze", "epochs", seeds)
    at_epochs, epochs_done = [], []
    for a, b in zip(prune, plain):
        # The pruner shortens epochs, so compare what each run spent to finish the same epochs.
        done = min(len(a["spent_by_epoch"]), len(b["spent_by_epoch"])) - 1  # completed by both
        if done >= 1:
            key = str(done - 1)
            at_epochs.append(1 - a["spent_by_epoch"][key]["rollouts"] / b["spent_by_epoch"][key]["rollouts"])
            epochs_done.append(done)
    effect = interval(at_epochs)
    out["pruner"] = {
        "prompts_pruned_at_the_end": interval([r["final_metrics"].get("lze/pruned_pool", 0.0) for r in prune]),
        "pool_prompts": SIZES_USED["epochs"].get("task_train_size"),
        "epochs_compared": epochs_done,
        "rollout_savings_at_equal_epochs_vs_lze_without_pruner": effect,
        "final_pass_at_1_minus_lze_without_pruner_equal_steps": interval(
            [final_pass_at_1(a) - final_pass_at_1(b) for a, b in zip(prune, plain)]),
        "verdict": verdict(effect),
    }
    return out


def lze_backward(results, seeds, setting: str) -> dict[str, Any]:
    """LZE's backward selection on one pool: main (the whole testbed) or edge (its edge levels)."""
    out: dict[str, Any] = {"pool": "every level" if setting == "main" else "the edge levels only"}
    lze, base, grpo, rand = (per_seed(results, m, setting, seeds) for m in ("lze", "grpo_no_zv", "grpo", "lze_random"))
    flops = [1 - a["backward_flops"] / b["backward_flops"] for a, b in zip(lze, base) if b["backward_flops"]]
    total = [1 - a["flops_estimate"] / g["flops_estimate"] for a, g in zip(lze, grpo) if g["flops_estimate"]]
    acc_base = interval([final_pass_at_1(a) - final_pass_at_1(b) for a, b in zip(lze, base)])
    acc_rand = interval([final_pass_at_1(a) - final_pass_at_1(b) for a, b in zip(lze, rand)])
    out.update({
        "backward_flops_savings_vs_grpo_without_zero_variance": interval(flops),
        "live_estimate_backward_savings_vs_mixed": interval([r["backward_savings_vs_mixed"] for r in lze]),
        "training_flops_savings_vs_grpo": interval(total),
        "selection_binds_share_of_steps": interval([r["selection_binds_share"] for r in lze]),
        "final_pass_at_1_minus_grpo_without_zero_variance": acc_base,
        "final_pass_at_1_minus_random_selection": acc_rand,
        "final_pass_at_1_minus_grpo": interval([final_pass_at_1(a) - final_pass_at_1(g) for a, g in zip(lze, grpo)]),
    })
    v = verdict(interval(flops))
    if v == "reproduced" and acc_base["high"] is not None and acc_base["high"] < -NON_INFERIORITY_MARGIN:
        v = "not reproduced (fewer backward FLOPs, but lower final Pass@1)"
    out["verdict_compute"] = v
    out["verdict_energy_beats_random"] = verdict(acc_rand)
    return out


def claim_hora(results, seeds, hard_levels: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"claim": "HORA: higher Pass@k than GRPO at the same rollout budget (paper 002)",
                           "hard_slice": hard_levels, "settings": {}}

    def hard_curve(run: dict[str, Any]) -> dict[str, float]:
        final = run["evaluations"][-1]["by_difficulty"]
        picked = [final[t] for t in hard_levels if t in final]
        weights = [v["prompts"] for v in picked]
        ks = picked[0]["pass_at"].keys() if picked else []
        return {k: float(np.average([v["pass_at"][k] for v in picked], weights=weights)) for k in ks}

    for setting, method in (("wide", "hora"), ("wide32", "hora_n0_8")):
        hora, grpo = per_seed(results, method, setting, seeds), per_seed(results, "grpo", setting, seeds)
        if not hora:
            continue
        curves = {"hora": [hard_curve(r) for r in hora], "grpo": [hard_curve(r) for r in grpo]}
        ks = sorted({int(k) for c in curves["hora"] for k in c})
        diff = {str(k): interval([a[str(k)] - b[str(k)] for a, b in zip(curves["hora"], curves["grpo"])]) for k in ks}
        top = str(ks[-1]) if ks else None
        out["settings"][setting] = {
            "group_size": SIZES_USED[setting]["group_size"], "n0": METHODS[method]["hora"]["n0"],
            "pass_at_j_hard_slice": {m: {str(k): interval([c[str(k)] for c in cs]) for k in ks}
                                     for m, cs in curves.items()},
            "pass_at_j_hard_slice_hora_minus_grpo": diff,
            "pass_at_1_all_hora_minus_grpo": interval([final_pass_at_1(a) - final_pass_at_1(b)
                                                       for a, b in zip(hora, grpo)]),
            "rollouts_per_run": {"hora": interval([r["rollouts_generated"] for r in hora]),
                                 "grpo": interval([r["rollouts_generated"] for r in grpo])},
            "verdict": verdict(diff[top]) if top else "not testable here",
        }
    out["verdict"] = "; ".join(f"{k}: {v['verdict']}" for k, v in out["settings"].items()) or "not testable here"
    return out


def claim_rlzvp(results, seeds) -> dict[str, Any]:
    out: dict[str, Any] = {"claim": "RL-ZVP: higher accuracy than GRPO at the same rollouts (paper 004)"}
    zvp, grpo, dapo = (per_seed(results, m, "main", seeds) for m in ("rlzvp", "grpo", "dapo"))
    vs_grpo = interval([final_pass_at_1(a) - final_pass_at_1(b) for a, b in zip(zvp, grpo)])
    at_budget = []
    for a, d in zip(zvp, dapo):
        dapo_there = value_at(*curve(d), a["rollouts_generated"])
        at_budget.append(final_pass_at_1(a) - dapo_there if dapo_there is not None else None)
    out.update({
        "final_pass_at_1_minus_grpo": vs_grpo,
        "effective_share": {"rlzvp": interval([r["effective_share_of_generated"] for r in zvp]),
                            "grpo": interval([r["effective_share_of_generated"] for r in grpo])},
        "final_pass_at_1_minus_dapo_equal_steps": interval([final_pass_at_1(a) - final_pass_at_1(b)
                                                            for a, b in zip(zvp, dapo)]),
        "pass_at_1_minus_dapo_at_equal_rollouts": interval(at_budget),
        "verdict": verdict(vs_grpo),
    })
    return out


# -- the figure --------------------------------------------------------------------------------
def draw(results: dict[str, dict[str, Any]], seeds: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(19, 5))
    panels = [("main", ("dapo", "greso", "hive", "hive_lam0.5", "grpo", "rlzvp", "lze"), "rollouts",
               "rollouts generated"),
              ("main", ("grpo", "grpo_no_zv", "lze", "lze_random"), "flops",
               "training FLOPs (estimate, prompts included): every level"),
              ("edge", ("grpo", "grpo_no_zv", "lze", "lze_random"), "flops",
               "training FLOPs (estimate, prompts included): the edge levels only")]
    for ax, (setting, methods, x, xlabel) in zip(axes, panels):
        for method in methods:
            runs = per_seed(results, method, setting, seeds)
            if not runs:
                continue
            n = min(len(r["evaluations"]) for r in runs)
            xs = np.mean([[p[x] for p in r["evaluations"][:n]] for r in runs], axis=0)
            ys = np.array([[p["pass_at_1"] for p in r["evaluations"][:n]] for r in runs])
            mean = ys.mean(axis=0)
            ax.plot(xs, mean, marker="o", markersize=3, label=LABELS[method])
            if len(runs) > 1:
                half = T95.get(len(runs) - 1, 1.96) * ys.std(axis=0, ddof=1) / math.sqrt(len(runs))
                ax.fill_between(xs, mean - half, mean + half, alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out Pass@1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1 seed, 30 steps (about 10 minutes on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="a one-layer model, a few steps (the test suite)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated, of {', '.join(PROTOCOLS)}")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each with cpu_count / jobs threads)")
    parser.add_argument("--lr", type=float, default=None, help="RL learning rate (default RunConfig's)")
    parser.add_argument("--ignore-gate", action="store_true", help="compare even when the calibration gate fails")
    parser.add_argument("--var", type=Path, default=Path("var"), help="warm-up cache folder (default var/)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--runs", type=Path, default=None, help="runs' events (default VAR/bench/rollout_savings_MODE)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs of the last results file (their events are re-read), train the others")
    parser.add_argument("--reanalyse", action="store_true",
                        help="train nothing: re-read the runs' events of the last results file "
                             "and recompute the claims")
    args = parser.parse_args()
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    threads = max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    seeds = SIZES[mode]["seeds"]
    SIZES_USED.update(SIZES[mode])
    out_dir = args.out or RESULTS
    runs_dir = args.runs or args.var / "bench" / f"rollout_savings_{mode}"
    started = time.perf_counter()

    stem = "rollout_savings" if mode == "full" else f"rollout_savings_{mode}"
    previous_path = out_dir / f"{stem}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() and (args.reanalyse or args.resume) \
        else None
    if args.reanalyse:
        if previous is None:
            raise SystemExit(f"--reanalyse needs {previous_path}")
        calibration, results = previous["calibration"], {}
        for name, old in previous["runs"].items():
            events = read_events(runs_dir / name / "events.jsonl")
            keep = {k: old[k] for k in ("method", "setting", "seed", "selectors")}
            results[name] = {**summarise(events, old["wall_seconds"], old["parameters"]), **keep}
        finish(mode, protocols, seeds, calibration, results, out_dir, stem, args, threads, started, previous)
        return
    calibration = (previous["calibration"] if args.resume and previous
                   else calibrate(mode, args.var, threads * args.jobs))
    print(f"calibration ({mode}): zero-variance share {calibration['zero_variance_share']:.2f}, levels:")
    for tag, v in calibration["levels"].items():
        print(f"  {tag}: greedy {v['greedy_pass_at_1']:.3f}, sampled {v['sampled_pass_at_1']:.3f}")
    print(f"  gate {'passed' if calibration['passed'] else 'FAILED'}: {calibration['checks']}", flush=True)
    if not calibration["passed"] and not args.ignore_gate and mode != "tiny":
        raise SystemExit("the calibration gate failed: RL has no headroom on this warm start, so no comparison "
                         "would mean anything (--ignore-gate compares anyway)")

    specs = sorted({RunSpec(m, PROTOCOLS[p][1], s) for p in protocols for m in PROTOCOLS[p][0] for s in seeds},
                   key=lambda r: (r.seed, r.setting, r.method))
    edge_levels = sorted(int(t.split("=")[1]) for t in calibration["checks"]["edge levels"]) or [2, 3]
    results: dict[str, dict[str, Any]] = {}
    if args.resume and previous is not None:  # keep the runs already trained; train the others
        for name, old in previous["runs"].items():
            if (runs_dir / name / "events.jsonl").is_file():
                keep = {k: old[k] for k in ("method", "setting", "seed", "selectors")}
                results[name] = {**summarise(read_events(runs_dir / name / "events.jsonl"), old["wall_seconds"],
                                             old["parameters"]), **keep}
        specs = [spec for spec in specs if spec.name not in results]
        print(f"resuming: {len(results)} runs kept, {len(specs)} to train", flush=True)
    jobs = [(spec, run_config(spec, mode, args.lr, edge_levels), str(runs_dir), str(args.var), threads)
            for spec in specs]
    # spawn, not fork: a child forked after torch started its OpenMP threads can hang
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1), mp_context=multiprocessing.get_context("spawn")) as pool:
        for spec, result in zip(specs, pool.map(run_one, jobs)):
            results[spec.name] = {**result, "method": spec.method, "setting": spec.setting, "seed": spec.seed,
                                  "selectors": METHODS[spec.method]}
            print(f"  ran {spec.name:28s} {result['status']}: {result['steps']} steps, {result['wall_seconds']:6.1f} s,"
                  f" {int(result['rollouts_generated'])} rollouts, final Pass@1 "
                  f"{result['evaluations'][-1]['pass_at_1']:.3f}", flush=True)

    finish(mode, protocols, seeds, calibration, results, out_dir, stem, args, threads, started,
           previous if args.resume else None)


def finish(mode: str, protocols: list[str], seeds: list[int], calibration: dict[str, Any],
           results: dict[str, dict[str, Any]], out_dir: Path, stem: str, args: argparse.Namespace, threads: int,
           started: float, previous: dict[str, Any] | None) -> None:
    """Claims, the figure and the results file from the runs' summaries."""
    claims: dict[str, Any] = {}
    if "P1" in protocols:
        claims["filters"] = claim_filters(results, seeds)
    if {"P2", "P2_edge", "P2_pruner"} & set(protocols):
        claims["lze"] = claim_lze(results, seeds)
    if "P3" in protocols or "P3_paper" in protocols:
        claims["hora"] = claim_hora(results, seeds, calibration["hard_levels"])
    if "P4" in protocols and "P1" in protocols:
        claims["rlzvp"] = claim_rlzvp(results, seeds)
    print_claims(claims)

    figure = out_dir / f"{stem}.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    draw(results, seeds, figure, f"Held-out Pass@1, mean over {len(seeds)} seed(s) with 95% intervals ({mode})")
    path = write_results(stem, json_safe({
        "mode": mode, "seeds": seeds, "sizes": SIZES[mode], "methods": METHODS, "protocols": protocols,
        "testbed": {k: v for k, v in RunConfig.from_mapping({**SIZES[mode].get("base", {})}).to_dict().items()
                    if k not in ("dataset", "eval_dataset", "selectors")},
        "calibration": calibration, "gate_ignored": not calibration["passed"],
        "claims": claims, "jobs": args.jobs, "threads": threads,
        "total_seconds": (previous["total_seconds"] if previous else 0.0) + (
            0.0 if args.reanalyse else time.perf_counter() - started),
        "runs": {name: {k: v for k, v in r.items() if k not in ("groups_collected_per_step",)}
                 for name, r in results.items()},
    }), out_dir)
    print(f"wrote {path} and {figure}")


def fmt(effect: dict[str, Any] | None, pct: bool = True, signed: bool = True) -> str:
    if not effect or effect.get("mean") is None:
        return "n/a"
    sign = "+" if signed else ""
    f = (lambda v: f"{100 * v:{sign}.1f}%") if pct else (lambda v: f"{v:{sign}.3f}")
    if effect["low"] is None:
        return f(effect["mean"])
    return f"{f(effect['mean'])} [{f(effect['low'])}, {f(effect['high'])}]"


def print_claims(claims: dict[str, Any]) -> None:
    if "filters" in claims:
        print("\nP1 filters vs DAPO (mean [95% interval] over seeds); the DAPO run against ideal dynamic sampling "
              f"{fmt(claims['filters']['dapo_live_estimate_vs_ideal_dynamic_sampling'])} (its overshoot):")
        for m, r in claims["filters"]["methods"].items():
            print(f"  {m:12s} rollouts to 90% of DAPO's gain {fmt(r['rollout_savings_to_90pct_of_dapo_gain'])} "
                  f"(seeds reaching {r['seeds_reaching_target']}), "
                  f"equal-steps {fmt(r['rollout_savings_vs_dapo_run_at_equal_steps'])}, "
                  f"live estimate {fmt(r['live_estimate_rollout_savings_vs_dynamic_sampling'])}, final Pass@1 - DAPO "
                  f"{fmt(r['final_pass_at_1_minus_dapo'], False)}, "
                  f"groups/step {fmt(r['groups_trained_per_step_mean'], False, False)}"
                  f" (min {r['groups_trained_per_step_min']}), "
                  f"proxy corr. {fmt(r['prompt_entropy_correlation'], False)}"
                  f" -> {r['verdict']}")
    if "lze" in claims:
        c = claims["lze"]
        for pool in c["pools"].values():
            print(f"\nP2 LZE on {pool['pool']}: backward FLOPs vs GRPO without zero-variance groups "
                  f"{fmt(pool['backward_flops_savings_vs_grpo_without_zero_variance'])}, training FLOPs vs GRPO "
                  f"{fmt(pool['training_flops_savings_vs_grpo'])}, K binds on "
                  f"{fmt(pool['selection_binds_share_of_steps'], True, False)} of steps, Pass@1 - no-ZV GRPO "
                  f"{fmt(pool['final_pass_at_1_minus_grpo_without_zero_variance'], False)}, - random "
                  f"{fmt(pool['final_pass_at_1_minus_random_selection'], False)} -> {pool['verdict_compute']}; "
                  f"energy beats random: {pool['verdict_energy_beats_random']}")
        pr = c["pruner"]
        print(f"   pruner: {fmt(pr['prompts_pruned_at_the_end'], False, False)} of "
              f"{pr['pool_prompts']} prompts pruned; "
              f"rollouts to finish the same epochs {fmt(pr['rollout_savings_at_equal_epochs_vs_lze_without_pruner'])}, "
              f"Pass@1 at equal steps {fmt(pr['final_pass_at_1_minus_lze_without_pruner_equal_steps'], False)}"
              f" -> {pr['verdict']}")
    if "hora" in claims:
        c = claims["hora"]
        for r in c["settings"].values():
            diff = r["pass_at_j_hard_slice_hora_minus_grpo"]
            print(f"\nP3 HORA - GRPO (N={r['group_size']}, n0={r['n0']}) on the hard slice {c['hard_slice']}: "
                  + ", ".join(f"Pass@{k} {fmt(v, False)}" for k, v in diff.items()) + f" -> {r['verdict']}")
    if "rlzvp" in claims:
        c = claims["rlzvp"]
        print(f"\nP4 RL-ZVP: Pass@1 - GRPO {fmt(c['final_pass_at_1_minus_grpo'], False)}, - DAPO at equal steps "
              f"{fmt(c['final_pass_at_1_minus_dapo_equal_steps'], False)}, at equal rollouts "
              f"{fmt(c['pass_at_1_minus_dapo_at_equal_rollouts'], False)} -> {c['verdict']}")


if __name__ == "__main__":
    main()
