"""What each selection method saves, and what it buys, on real GRPO runs of the embedded engine.

Every method trains the same tiny model (RunConfig defaults: a 3-layer GPT, the cached
supervised warm-up shared by all runs through one --var folder) on the same task (add),
with the same seed and the same optimizer-step budget, each as a real LocalEngine run
into its own folder; the figures are read back from its events.jsonl. Methods:
grpo, dapo, greso, hive, hora ({n0: 4} of N = 8: half the budget is allocated after the
probe), rlzvp, lze, lze with the pruner ({lze: {prune: true}}) and hive+hora+rlzvp.

Sizes (B prompts x N rollouts per step, optimizer steps, evaluation every E steps on P
held-out prompts with k samples each; the train split is the default 2000 prompts):
- default:  B=64, N=8, 100 steps, E=10, P=200, k=8: 6,400 prompts drawn by uniform GRPO,
  3.2 epochs, so the history-based methods (GRESO, HIVE stage 1, LZE backward selection
  from epoch 2, the LZE pruner from epoch 3) act on prompts they have seen; 15 minutes
  measured with --threads 1 on 2 cores shared with other jobs;
- --quick:  B=16, N=8, 15 steps, E=5, P=64, k=8: a few minutes (the warm-up, when not
  cached yet, adds about 1.5 minutes). 240 prompts, an eighth of an epoch: no prompt is
  seen twice, so GRESO and HIVE stage 1 keep everything (both still refill after dropping
  zero-variance groups, and HIVE's stage 2 still gates), LZE only leaves zero-variance
  groups out of the update, and its pruner never acts (no epoch ends);
- --tiny:   a one-layer model, a 100-step warm-up, a 64-prompt train split, B=8, N=4,
  2 steps (the test suite).
A smaller train split would give more epochs, but the warm-up trains on the train split
and memorises a small one (1000 prompts: 43% Pass@1 on train prompts, 7% held out; 2000:
13% and 17%), so the benchmark keeps the default.
The RL learning rate is 1e-4 (--lr), not RunConfig's 5e-4: with 5e-4, 40 GRPO steps at
B=64 left held-out Pass@1 where it started (0.170 -> 0.166) while 1e-4 raised it
(0.170 -> 0.215); a benchmark where no method learns would compare nothing.

For each method: rollouts and tokens generated, rollout savings against uniform GRPO
(1 - generated / (B x N x steps)), the share of generated rollouts that were effective
(non-zero advantage), wall seconds of the run and training seconds (the sum of the
measured select/generate/reward/update phases, evaluation excluded), held-out Pass@1 and
Pass@k at every evaluation and at the end, and the rollouts, tokens and training seconds
spent before the first evaluation that reached the target Pass@1 (--target: a number,
'+0.03' for that much above the common starting Pass@1, or 'grpo', the uniform GRPO run's
final Pass@1; 'not reached' when no evaluation did; reached at step 0 means the start
already met it).

Run: .venv/bin/python bench/rollout_savings.py [--quick | --tiny] [--methods a,b] [--out DIR]
Writes DIR/rollout_savings.json and DIR/rollout_savings.html (self-contained Plotly
report; default DIR bench/results; --quick and --tiny write rollout_savings_quick.* and
rollout_savings_tiny.*, so a quick run never replaces the full one's results); each run's events.jsonl and final checkpoint go to
--runs (default VAR/bench/rollout_savings_MODE, outside git).
"""

from __future__ import annotations

import argparse
import html
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._timing import RESULTS, write_results
from workers.engines.config import RunConfig
from workers.engines.telemetry import JsonlSink, json_safe, read_events

METHODS = ("grpo", "dapo", "greso", "hive", "hora", "rlzvp", "lze", "lze+prune", "hive+hora+rlzvp")


def method_selectors(name: str, group_size: int) -> dict[str, dict[str, Any]]:
    """A method's selectors. HORA probes half of N, then allocates the other half of B x N."""
    hora = {"n0": max(group_size // 2, 1)}
    return {
        "grpo": {"grpo": {}},
        "dapo": {"dapo": {}},
        "greso": {"greso": {}},
        "hive": {"hive": {}},
        "hora": {"hora": hora},
        "rlzvp": {"rlzvp": {}},
        "lze": {"lze": {}},
        "lze+prune": {"lze": {"prune": True}},
        "hive+hora+rlzvp": {"hive": {}, "hora": hora, "rlzvp": {}},
    }[name]
SIZES: dict[str, dict[str, Any]] = {
    "full": {"batch_size": 64, "group_size": 8, "steps": 100, "eval_every": 10, "eval_prompts": 200, "eval_k": 8},
    "quick": {"batch_size": 16, "group_size": 8, "steps": 15, "eval_every": 5, "eval_prompts": 64, "eval_k": 8},
    "tiny": {"batch_size": 8, "group_size": 4, "steps": 2, "eval_every": 1, "eval_prompts": 16, "eval_k": 2,
             "model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 100, "task_train_size": 64,
             "task_test_size": 16},
}


# -- the series, computed apart from any drawing -------------------------------------------
@dataclass(frozen=True)
class EvalPoint:
    """One held-out evaluation with what the run had spent before it."""

    step: int
    rollouts_generated: int
    tokens_generated: int
    train_seconds: float
    pass_at_1: float
    pass_at_k: float


@dataclass(frozen=True)
class TargetReach:
    reached: bool
    step: int | None = None
    rollouts_generated: int | None = None
    tokens_generated: int | None = None
    train_seconds: float | None = None


@dataclass(frozen=True)
class MethodResult:
    method: str
    selectors: dict[str, dict[str, Any]]
    status: str
    steps: int
    rollouts_generated: int
    tokens_generated: int
    rollouts_uniform: int
    rollout_savings: float  # 1 - generated / uniform
    rollouts_effective: int
    effective_share_of_generated: float  # effective / generated
    rollouts_trained: int
    groups_all_correct: int
    groups_all_wrong: int
    groups_generated: int
    wall_seconds: float
    train_seconds: float  # measured phases, evaluation excluded
    seconds_by_phase: dict[str, float]
    final_pass_at_1: float
    final_pass_at_k: float
    eval_k: int
    evaluations: list[EvalPoint]
    alerts: list[str]


def summarise(method: str, selectors: dict[str, dict[str, Any]], events: list[dict[str, Any]],
              wall_seconds: float) -> MethodResult:
    """One run's figures from its events (SELECTORS.md section 7 accounting)."""
    steps = sorted((e for e in events if e["event"] == "step"), key=lambda e: e["step"])
    evaluations = sorted((e for e in events if e["event"] == "evaluation"), key=lambda e: e["step"])
    finished = [e for e in events if e["event"] == "run_finished"]
    spent_before: dict[int, tuple[int, int, float]] = {0: (0, 0, 0.0)}
    rollouts = tokens = 0
    seconds = 0.0
    phases: dict[str, float] = {}
    totals = {"rollouts_effective": 0, "rollouts_uniform": 0, "rollouts_trained": 0, "groups_all_correct": 0,
              "groups_all_wrong": 0, "groups_generated": 0}
    alerts: list[str] = []
    for event in steps:
        summary = event["summary"]
        rollouts += summary["rollouts_generated"]
        tokens += summary["tokens_generated"]
        seconds += summary["device_seconds"]
        for name, value in summary["seconds"].items():
            phases[name] = phases.get(name, 0.0) + value
        for name in totals:
            totals[name] += summary[name]
        alerts.extend(a for a in event.get("alerts", []) if a not in alerts)
        spent_before[event["step"] + 1] = (rollouts, tokens, seconds)
    points = []
    for e in evaluations:
        spent = spent_before.get(e["step"], (rollouts, tokens, seconds))
        points.append(EvalPoint(e["step"], spent[0], spent[1], spent[2], float(e["pass_at_1"]), float(e["pass_at_k"])))
    final = points[-1] if points else None
    return MethodResult(
        method=method, selectors=selectors, status=finished[-1]["status"] if finished else "unfinished",
        steps=len(steps), rollouts_generated=rollouts, tokens_generated=tokens,
        rollouts_uniform=totals["rollouts_uniform"],
        rollout_savings=1 - rollouts / totals["rollouts_uniform"] if totals["rollouts_uniform"] else 0.0,
        rollouts_effective=totals["rollouts_effective"],
        effective_share_of_generated=totals["rollouts_effective"] / rollouts if rollouts else 0.0,
        rollouts_trained=totals["rollouts_trained"], groups_all_correct=totals["groups_all_correct"],
        groups_all_wrong=totals["groups_all_wrong"], groups_generated=totals["groups_generated"],
        wall_seconds=wall_seconds, train_seconds=seconds, seconds_by_phase=phases,
        final_pass_at_1=final.pass_at_1 if final else math.nan, final_pass_at_k=final.pass_at_k if final else math.nan,
        eval_k=int(evaluations[-1]["k"]) if evaluations else 0, evaluations=points, alerts=alerts,
    )


def reach(points: list[EvalPoint], target: float) -> TargetReach:
    """The first evaluation whose Pass@1 is at least the target, with what was spent before it."""
    for p in points:
        if p.pass_at_1 >= target:
            return TargetReach(True, p.step, p.rollouts_generated, p.tokens_generated, p.train_seconds)
    return TargetReach(False)


def resolve_target(spec: str, results: dict[str, MethodResult]) -> tuple[float, str]:
    """'grpo': uniform GRPO's final Pass@1; '+x': x above the start; else a fixed number."""
    start = next(iter(results.values())).evaluations[0].pass_at_1
    if spec == "grpo":
        if "grpo" not in results:
            raise SystemExit("--target grpo needs the grpo method in --methods; give a number instead")
        target = results["grpo"].final_pass_at_1
        kind = "final Pass@1 of uniform GRPO"
        if target <= start:
            kind += f", not above the starting {start:.3f}: every run meets it at step 0"
        return target, kind
    if spec.startswith("+"):
        return start + float(spec[1:]), f"the starting Pass@1 {start:.3f} {spec}"
    return float(spec), "fixed"


# -- running ---------------------------------------------------------------------------------
def run_method(name: str, base: dict[str, Any], runs_dir: Path, var_dir: Path) -> MethodResult:
    from workers.engines.local.engine import LocalEngine

    selectors = method_selectors(name, base["group_size"])
    config = RunConfig.from_mapping({**base, "selectors": selectors})
    out = runs_dir / name.replace("+", "_")
    shutil.rmtree(out, ignore_errors=True)
    sink = JsonlSink(out)
    engine = LocalEngine(config, out, sink, var_dir=var_dir)
    start = time.perf_counter()
    engine.run()
    wall = time.perf_counter() - start
    return summarise(name, selectors, read_events(sink.path), wall)


def warm_up(base: dict[str, Any], var_dir: Path) -> dict[str, float]:
    """Fill the shared warm-up cache once, and sample once, outside every run's wall time."""
    import tempfile

    from workers.engines.local.engine import LocalEngine

    with tempfile.TemporaryDirectory() as scratch:
        engine = LocalEngine(RunConfig.from_mapping(base), scratch, JsonlSink(scratch), var_dir=var_dir)
        figures = engine._warm_up()
        engine.evaluate()  # first-call costs (allocator, kernels) are paid here, not by the first method
        return figures


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# -- report ----------------------------------------------------------------------------------
def table_rows(results: dict[str, MethodResult], reaches: dict[str, TargetReach]) -> list[dict[str, Any]]:
    rows = []
    for name, r in results.items():
        t = reaches[name]
        rows.append({
            "method": name,
            "rollouts": r.rollouts_generated,
            "tokens": r.tokens_generated,
            "savings": r.rollout_savings,
            "effective": r.effective_share_of_generated,
            "wall_s": r.wall_seconds,
            "train_s": r.train_seconds,
            "pass1": r.final_pass_at_1,
            "passk": r.final_pass_at_k,
            "to_target_rollouts": t.rollouts_generated if t.reached else None,
            "to_target_s": t.train_seconds if t.reached else None,
            "to_target_step": t.step if t.reached else None,
        })
    return rows


def format_table(rows: list[dict[str, Any]], k: int) -> str:
    head = (f"{'method':16s} {'rollouts':>9s} {'tokens':>8s} {'savings':>8s} {'effective':>9s} {'wall s':>7s} "
            f"{'train s':>7s} {'Pass@1':>7s} {f'Pass@{k}':>7s} {'to target: rollouts':>19s} {'train s':>8s} {'step':>5s}")
    lines = [head]
    for r in rows:
        reached = r["to_target_rollouts"] is not None
        target = (f"{r['to_target_rollouts']:>19d} {r['to_target_s']:8.1f} {r['to_target_step']:5d}" if reached
                  else f"{'not reached':>19s} {'-':>8s} {'-':>5s}")
        lines.append(f"{r['method']:16s} {r['rollouts']:9d} {r['tokens']:8d} {r['savings']:8.1%} {r['effective']:9.1%} "
                     f"{r['wall_s']:7.1f} {r['train_s']:7.1f} {r['pass1']:7.3f} {r['passk']:7.3f} {target}")
    return "\n".join(lines)


def render_html(results: dict[str, MethodResult], rows: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    """A self-contained page: the Plotly bundle inline, nothing loaded from elsewhere."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    def chart(x_name: str, x_label: str, y_name: str, y_label: str, chart_title: str) -> str:
        fig = go.Figure()
        for name, r in results.items():
            fig.add_trace(go.Scatter(x=[getattr(p, x_name) for p in r.evaluations],
                                     y=[getattr(p, y_name) for p in r.evaluations],
                                     mode="lines+markers", name=name,
                                     text=[f"step {p.step}" for p in r.evaluations]))
        fig.update_layout(title=chart_title, xaxis_title=x_label, yaxis_title=y_label, template="plotly_white",
                          height=460, uirevision="rollout_savings")
        return fig.to_html(full_html=False, include_plotlyjs=False)

    k = next(iter(results.values())).eval_k if results else 0
    charts = [
        chart("rollouts_generated", "rollouts generated", "pass_at_1", "held-out Pass@1",
              "Held-out Pass@1 vs rollouts generated"),
        chart("train_seconds", "training seconds (measured phases)", "pass_at_1", "held-out Pass@1",
              "Held-out Pass@1 vs training seconds"),
        chart("rollouts_generated", "rollouts generated", "pass_at_k", f"held-out Pass@{k}",
              f"Held-out Pass@{k} vs rollouts generated"),
    ]
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r["method"], r["rollouts"], r["tokens"], f"{r['savings']:.1%}", f"{r['effective']:.1%}",
            f"{r['wall_s']:.1f}", f"{r['train_s']:.1f}", f"{r['pass1']:.3f}", f"{r['passk']:.3f}",
            r["to_target_rollouts"] if r["to_target_rollouts"] is not None else "not reached",
            f"{r['to_target_s']:.1f}" if r["to_target_s"] is not None else "-",
            r["to_target_step"] if r["to_target_step"] is not None else "-",
        )) + "</tr>" for r in rows)
    header = "".join(f"<th>{h}</th>" for h in (
        "method", "rollouts generated", "tokens generated", "rollout savings", "effective share of generated",
        "wall s", "training s", "final Pass@1", f"final Pass@{k}", "rollouts to target", "training s to target",
        "step reached"))
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:14px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head>
<body><h1>{html.escape(title)}</h1><ul>{note_items}</ul>
<table><thead><tr>{header}</tr></thead><tbody>{cells}</tbody></table>
{''.join(charts)}
</body></html>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="B=16, N=8, 15 steps, eval every 5 on 64 prompts")
    size.add_argument("--tiny", action="store_true", help="a one-layer model, B=8, N=4, 2 steps (tests)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--target", default="grpo",
                        help="target held-out Pass@1: a number, or 'grpo' (the uniform GRPO run's final Pass@1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-4, help="RL learning rate of every run (see above)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier on a shared machine")
    parser.add_argument("--var", type=Path, default=Path("var"), help="shared warm-up cache folder (default var/)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="folder of the runs' events and checkpoints (default VAR/bench/rollout_savings_MODE)")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = {"task": "add", "seed": args.seed, "lr": args.lr, "checkpoint_every": 0, **SIZES[mode]}
    train_size = RunConfig.from_mapping(base).task_train_size
    out_dir = args.out or RESULTS
    runs_dir = args.runs or args.var / "bench" / f"rollout_savings_{mode}"

    started = time.perf_counter()
    warmup = warm_up(base, args.var)
    results: dict[str, MethodResult] = {}
    load: dict[str, float] = {}
    for name in methods:
        results[name] = run_method(name, base, runs_dir, args.var)
        load[name] = os.getloadavg()[0]
        r = results[name]
        print(f"  ran {name:16s} {r.status}: {r.steps} steps, {r.wall_seconds:6.1f} s, "
              f"final Pass@1 {r.final_pass_at_1:.3f}", flush=True)
    target, target_kind = resolve_target(args.target, results)
    reaches = {name: reach(r.evaluations, target) for name, r in results.items()}
    rows = table_rows(results, reaches)
    k = SIZES[mode]["eval_k"]
    sizes = {**SIZES[mode], "task_train_size": train_size}
    print(f"\nrollout savings ({mode}): add, B={sizes['batch_size']}, N={sizes['group_size']}, "
          f"{sizes['steps']} steps, lr {args.lr:g}, eval every {sizes['eval_every']} on "
          f"{sizes['eval_prompts']} held-out prompts x k={k}, train split {train_size}, seed {args.seed}, "
          f"{torch_threads()} threads")
    print(f"target Pass@1 {target:.3f} ({target_kind}); 'to target' counts what was spent before the first "
          f"evaluation at or above it")
    print(format_table(rows, k))
    notes = [
        (f"Task add, seed {args.seed}, B={sizes['batch_size']}, N={sizes['group_size']}, "
         f"{sizes['steps']} optimizer steps per method, lr {args.lr:g}, train split {train_size} prompts, held-out "
         f"evaluation every {sizes['eval_every']} steps on {sizes['eval_prompts']} prompts x k={k}."),
        f"Target Pass@1 {target:.3f} ({target_kind}).",
        ("rollout savings = 1 - generated / (B x N x steps); effective share = rollouts with a "
         "non-zero advantage / rollouts generated; training seconds = measured "
         "select+generate+reward+update, evaluation excluded."),
        (f"Machine: {os.cpu_count()} CPUs, shared; load average at the end of each run: "
         + ", ".join(f"{n} {v:.1f}" for n, v in load.items()) + "."),
    ]
    page = render_html(results, rows, f"Rollout savings ({mode})", notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "rollout_savings" if mode == "full" else f"rollout_savings_{mode}"
    html_path = out_dir / f"{stem}.html"
    html_path.write_text(page, encoding="utf-8")
    path = write_results(stem, json_safe({
        "mode": mode, "sizes": sizes, "seed": args.seed, "lr": args.lr, "threads": torch_threads(),
        "warmup": warmup,
        "target": {"pass_at_1": target, "kind": target_kind},
        "total_seconds": time.perf_counter() - started, "load_average_after_run": load,
        "runs": str(runs_dir),
        "methods": {name: {**asdict(r), "to_target": asdict(reaches[name])} for name, r in results.items()},
        "table": rows,
    }), out_dir)
    print(f"wrote {path} and {html_path}")


if __name__ == "__main__":
    main()
