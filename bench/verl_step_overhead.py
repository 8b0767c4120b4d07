"""What Edgeplane's selection adds to a verl step, measured on CPU without the GPU phases.

The trainer of ``tests/engines/verl/harness.py`` (verl's dataloader over our parquet, verl's
replay buffer over a local TransferQueue, a scripted rollout writing trajectories the way
verl's agent loop does) runs the part of a verl 0.9.1 step that selection touches:
``prepare_step`` (draw, screen, submit), ``replay_buffer.sample`` (wait, filter, select,
materialise) and ``close_step`` (ledger, record). The baseline is verl's own
``PPOTrainerSync.prepare_step`` and ``ReplayBuffer.sample`` on the same trainer, data and
scripted rollouts. Generation, log-probs and the update (the GPU phases) are not in either
figure: a real step adds them to both.

Prints and writes bench/results/verl_step_overhead.json: median ms per step over the
measured steps, for the whole step and for the three places Edgeplane's code runs
(``_select_prompts``, the buffer's ``_select_prompt_uids`` with verl's choice inside it,
``close_step``), beside the scripted rollout's own time (TransferQueue writes, not ours).
Run: .venv/bin/python bench/verl_step_overhead.py [--batch 256 --group 8]

``--real-loop`` measures whole steps of verl's real loop instead, on CPU (``device: cpu``: the
tiny Llama, the transformers rollout, FSDP2 on gloo): one ``python -m workers.engines.verl.train``
job per method and seed, verl's ``timing_s/step`` of every step after the first, and each
method's seconds per step as a ratio to GRPO's with the same seed (the same data order and
sizes). Writes bench/results/verl_step_overhead_cpu.json. Run:
.venv/bin/python bench/verl_step_overhead.py --real-loop [--batch 4 --group 4 --steps 6 --seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._timing import write_results

METHODS = {
    "grpo": {"grpo": {}},
    "greso": {"greso": {}},
    "lze_prune": {"lze": {"prune": True}},
    "hora": {"hora": {"n0": 2}, "rlzvp": {}},
}


def successes(group_size: int):
    def script(key: str) -> int:
        i = int(key.rsplit(":", 1)[1])
        return group_size if i % 3 == 0 else 0 if i % 5 == 0 else 1 + i % (group_size - 1)
    return script


def clear_train(tq) -> None:
    items = (tq.kv_list(partition_id="train") or {}).get("train", {})
    if items:
        tq.kv_clear(keys=list(items), partition_id="train")


def timed(obj, name: str, totals: dict[str, float]) -> None:
    """Wrap ``obj.name`` so its wall time adds up in ``totals[name]``."""
    method = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

    setattr(obj, name, wrapper)


def measure(name: str, selectors: dict, args, tokenizer, folder: Path, tq) -> dict[str, float]:
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from tests.engines.verl.harness import ScriptedRollout, make_trainer

    trainer = make_trainer(folder / name, selectors, tokenizer, batch_size=args.batch, group_size=args.group,
                           minibatches=1, task_train_size=args.prompts, task_test_size=16, steps=args.steps * 2)
    trainer.replay_buffer.poll_interval = 0.001
    trainer.agent_loop_manager = ScriptedRollout(args.group, successes(args.group))
    trainer.rollouts_effective = 0
    parts: dict[str, float] = {}
    timed(trainer, "_select_prompts", parts)  # pre-rollout: draw, screen (HIVE's forward pass excluded: none here)
    timed(trainer.agent_loop_manager, "generate_sequences", parts)  # the scripted rollout: not ours
    timed(trainer.replay_buffer, "_select_prompt_uids", parts)  # post-rollout: verl's choice + ours
    timed(trainer, "close_step", parts)
    rows: dict[str, list[float]] = {"step_ms": [], "verl_step_ms": []}
    for step in range(args.steps):
        parts.clear()
        trainer.global_steps += 1
        start = time.perf_counter()
        trainer.prepare_step()
        _batch, metrics = trainer.replay_buffer.sample(global_steps=trainer.global_steps, partition_id="train",
                                                      batch_size=args.batch)
        trainer.close_step(metrics, {})
        total = time.perf_counter() - start
        clear_train(tq)
        # verl's own path on the same trainer and data: no selection, no record
        verl_parts = dict(parts)
        parts.clear()
        trainer.global_steps += 1
        start = time.perf_counter()
        PPOTrainerSync.prepare_step(trainer)
        ReplayBuffer.sample(trainer.replay_buffer, global_steps=trainer.global_steps, partition_id="train",
                            batch_size=args.batch)
        verl_total = time.perf_counter() - start
        clear_train(tq)
        if step == 0:  # starts the dataloader and warms TransferQueue: left out of both
            continue
        rows["step_ms"].append(total * 1e3)
        rows["verl_step_ms"].append(verl_total * 1e3)
        for key in ("_select_prompts", "_select_prompt_uids", "close_step", "generate_sequences"):
            rows.setdefault(f"{key.strip('_')}_ms", []).append(verl_parts.get(key, 0.0) * 1e3)
        rows.setdefault("verl_rollout_ms", []).append(parts.get("generate_sequences", 0.0) * 1e3)
    return {k: statistics.median(v) for k, v in rows.items()}


def real_loop(args) -> None:
    """Seconds per step of verl's real loop on CPU, per method, as a ratio to GRPO per seed."""
    from tests.engines.verl.e2e import run_job

    methods = {"grpo": METHODS["grpo"], "hive": {"hive": {}}, "hora": METHODS["hora"],
               "lze_prune": METHODS["lze_prune"]}
    per_seed: dict[str, dict[int, list[float]]] = {name: {} for name in methods}
    rollouts: dict[str, dict[int, list[float]]] = {name: {} for name in methods}  # generated per step
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name, selectors in methods.items():
                job = run_job(Path(tmp) / f"{name}-{seed}", selectors, steps=args.steps, batch_size=args.batch,
                              group_size=args.group, task_train_size=args.prompts, seed=seed, checkpoint_every=0,
                              eval_prompts=2)
                if job.process.returncode != 0:
                    raise SystemExit(f"{name} seed {seed} failed:\n{job.log_tail()}")
                logged = [m for m in job.metrics() if "timing_s/step" in m][1:]
                steps = [float(m["timing_s/step"]) for m in logged]
                per_seed[name][seed] = steps
                rollouts[name][seed] = [float(m.get("edgeplane/rollouts_generated", 0)) for m in logged]
                print(f"{name:10s} seed {seed}: {statistics.median(steps):6.2f} s/step over {len(steps)} steps, "
                      f"{statistics.median(rollouts[name][seed]):.0f} rollouts/step")
    figures: dict[str, dict[str, object]] = {}
    for name, seeds in per_seed.items():
        medians = [statistics.median(v) for v in seeds.values()]
        ratios = [statistics.median(seeds[s]) / statistics.median(per_seed["grpo"][s]) for s in seeds]
        figures[name] = {"seconds_per_step_median": statistics.median(medians),
                         "seconds_per_step_range": [min(medians), max(medians)],
                         "ratio_to_grpo_median": statistics.median(ratios),
                         "ratio_to_grpo_range": [min(ratios), max(ratios)],
                         # what a step did: a method that rolls out more (refills) is slower per step
                         "rollouts_generated_per_step_median": statistics.median(
                             r for v in rollouts[name].values() for r in v),
                         "seconds_per_rollout_generated_median": statistics.median(
                             t / r for s in seeds for t, r in zip(seeds[s], rollouts[name][s]) if r),
                         "per_seed_steps": seeds, "per_seed_rollouts": rollouts[name]}
        f = figures[name]
        print(f"{name:10s} {f['seconds_per_step_median']:6.2f} s/step (seeds {min(medians):.2f}-{max(medians):.2f}) | "
              f"x{f['ratio_to_grpo_median']:.2f} of GRPO (seeds {min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{f['rollouts_generated_per_step_median']:.0f} rollouts/step, "
              f"{f['seconds_per_rollout_generated_median']:.3f} s per rollout generated")
    path = write_results("verl_step_overhead_cpu", {
        "what": "verl 0.9.1's own loop on CPU (tiny Llama, transformers rollout, FSDP2 on gloo): timing_s/step "
                "after the first step; ratio = method's median s/step / GRPO's, same seed; the random tiny model "
                "solves nothing, so every group is zero-variance and the group filters (HIVE's) refill up to "
                "their cap",
        "batch": args.batch, "group": args.group, "prompts": args.prompts, "steps": args.steps,
        "seeds": args.seeds, "per_method": figures})
    print(f"written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--real-loop", action="store_true", help="whole steps of verl's real loop on CPU")
    parser.add_argument("--seeds", type=int, default=3, help="--real-loop: seeds per method")
    args = parser.parse_args()
    if args.real_loop:
        if "--batch" not in sys.argv:
            args.batch, args.group, args.prompts, args.steps = 4, 4, 64, 6
        real_loop(args)
        return

    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    from tests.engines.verl.harness import char_tokenizer

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    figures: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            tokenizer = char_tokenizer(folder / "tokenizer")
            for name, selectors in METHODS.items():
                figures[name] = measure(name, selectors, args, tokenizer, folder, tq)
                f = figures[name]
                ours = f["select_prompts_ms"] + f["select_prompt_uids_ms"] + f["close_step_ms"]
                print(f"{name:10s} step {f['step_ms']:7.1f} ms (scripted rollout {f['generate_sequences_ms']:6.1f}) | "
                      f"pre-rollout {f['select_prompts_ms']:6.1f}  post-rollout {f['select_prompt_uids_ms']:6.1f}  "
                      f"close {f['close_step_ms']:6.1f}  = {ours:6.1f} ms | "
                      f"verl alone: step {f['verl_step_ms']:7.1f} ms "
                      f"(scripted rollout {f['verl_rollout_ms']:6.1f})")
    finally:
        tq.close()
        ray.shutdown()
    path = write_results("verl_step_overhead", {"batch": args.batch, "group": args.group, "prompts": args.prompts,
                                                "steps_measured": args.steps - 1, "per_method": figures})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
