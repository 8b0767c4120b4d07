"""Step records in the engine's shape for a HIVE + HORA + RL-ZVP + LZE run, written through
the real ingestion service by the tests (``controlplane.telemetry.services.step_ingest``)."""

from __future__ import annotations

from typing import Any

from workers.record import REQUIRED_SUMMARY

METHODS = {"hive": {}, "hora": {"n0": 2}, "rlzvp": {}, "lze": {"backward": False, "prune": True}}
CONFIG = {"steps": 20, "batch_size": 4, "group_size": 4, "selectors": METHODS}


def step_record(step: int, keys: list[str], *, group_size: int = 4, skipped: list[str] | None = None,
                device_seconds: float = 2.0, extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Prompts ``keys`` rolled out (pass rates cycle 0, 1/4, ... 1 by position and step);
    ``skipped`` were skipped by HIVE stage 1. ``extra_summary`` adds or overrides summary
    fields (the savings yardsticks' counts and estimates)."""
    skipped = skipped or []
    successes = [(i + step) % (group_size + 1) for i in range(len(keys))]
    generated = group_size * len(keys)
    uniform = group_size * (len(keys) + len(skipped))
    all_correct = sum(s == group_size for s in successes)
    all_wrong = sum(s == 0 for s in successes)
    summary = {name: 0 for name in REQUIRED_SUMMARY}
    summary.update(
        rollouts_generated=generated, tokens_generated=generated * 5, rollouts_effective=generated - 4 * all_correct,
        rollouts_trained=generated, rollouts_uniform=uniform, groups_generated=len(keys), groups_trained=len(keys),
        groups_all_correct=all_correct, groups_all_wrong=all_wrong,
        rollout_savings=1.0 - generated / uniform, effective_share_of_generated=0.75, flops_estimate=1e9,
        flops_uniform_estimate=2e9, device_seconds=device_seconds,
        seconds={"select": 0.1, "generate": 1.0, "reward": 0.2, "update": 0.7},
        metrics={"hive/stage1_candidates": float(len(keys) + len(skipped)), "hive/stage1_kept": float(len(keys)),
                 "hive/stage2_kept": float(len(keys)), "hive/entropy_threshold": 0.6 + step / 100,
                 "hive/entropy_correlation": 0.3, "rlzvp/shaped_rollouts": 4.0 * (all_correct + all_wrong),
                 "lze/selected_share": 0.5, "lze/energy_mean": 0.4, "lze/pruned_pool": float(step // 3),
                 "lze/replaying": 0.0},
        train={"reward_mean": 0.25 + step / 100, "loss": 0.1},
    )
    summary.update(extra_summary or {})
    observations, decisions = [], []
    for i, (key, wins) in enumerate(zip(keys, successes)):
        bucket = "too_easy" if wins == group_size else "too_hard" if wins == 0 else "edge"
        observations.append({"prompt_key": key, "group_size": group_size, "successes": wins,
                             "pass_rate": wins / group_size, "response_entropy": 0.3 + 0.1 * i,
                             "prompt_entropy": 0.8, "energy": 0.2 + 0.1 * i, "response_tokens": 20,
                             "trained": i % 2 == 0, "bucket": bucket})
        decisions += [
            {"step": step, "prompt_key": key, "layer": "pre_rollout", "method": "hive", "action": "kept",
             "reason": "hive.stage2_kept", "scores": {"entropy": 0.9, "threshold": 0.6, "candidates": 8},
             "message": "kept by HIVE stage 2: prompt entropy 0.900 >= median 0.600 of 8 candidates"},
            {"step": step, "prompt_key": key, "layer": "allocation", "method": "hora", "action": "allocated",
             "reason": "hora.allocated", "scores": {"successes": min(wins, 2), "probe": 2, "posterior_mean": 0.5,
                                                    "extra": 2 - min(wins, 2), "group_size": 4 - min(wins, 2)},
             "message": f"allocated by HORA: {min(wins, 2)}/2 probe hits, posterior mean 0.500, "
                        f"{2 - min(wins, 2)} extra rollouts (group of {4 - min(wins, 2)})"},
            {"step": step, "prompt_key": key, "layer": "post_rollout", "method": "lze",
             "action": "selected" if i % 2 == 0 else "dropped",
             "reason": "lze.selected" if i % 2 == 0 else "lze.not_selected",
             "scores": {"energy": 0.2 + 0.1 * i, "rank": i + 1, "live": len(keys), "k": 2},
             "message": f"{'selected by' if i % 2 == 0 else 'left out of the update by'} LZE: energy "
                        f"{0.2 + 0.1 * i:.3f}, rank {i + 1} of {len(keys)} live groups, top 2 kept"},
        ]
    decisions += [
        {"step": step, "prompt_key": key, "layer": "pre_rollout", "method": "hive", "action": "skipped",
         "reason": "hive.stage1_skipped", "scores": {"s_rew": 0.1, "s_ent": 0.2, "keep_probability": 0.1, "draw": 0.7},
         "message": "skipped by HIVE stage 1: s_rew 0.100, s_ent 0.200, keep probability 0.100, draw 0.700"}
        for key in skipped
    ]
    return {"step": step, "epoch": 0, "summary": summary, "observations": observations, "decisions": decisions,
            "alerts": []}
