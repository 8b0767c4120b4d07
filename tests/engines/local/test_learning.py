"""A learning sanity check of the whole update path: on a reward a fresh model can learn in
a few dozen steps, uniform GRPO must raise the mean reward far above where it started.

A sign error in the advantages, a loss that ignores them, an optimizer that never steps or
a sampler that does not follow the weights would each leave the reward where it was (or
drive it to zero), and this test fails. The task: every prompt's answer is "7", one
response token, a model trained from scratch (no warm-up): at the start each token is
about equally likely, so groups of 16 are mostly mixed and GRPO has signal from step 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workers.engines.config import RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.telemetry import JsonlSink, read_events


def constant_answer_dataset(path: Path, n: int) -> Path:
    rows = [{"data_source": "sanity", "prompt": [{"role": "user", "content": f"{i % 97}+{i % 89}="}],
             "reward_model": {"style": "rule", "ground_truth": "7"}, "extra_info": {"index": i, "split": "train"}}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def rewards_per_step(tmp_path: Path, var_dir: Path, **overrides) -> list[float]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = constant_answer_dataset(tmp_path / "sevens.jsonl", 64)
    config = RunConfig.from_mapping({
        "dataset": str(data), "eval_dataset": str(data), "model_layers": 1, "model_dim": 32, "model_heads": 2,
        "warmup_steps": 0, "warmup_noise_steps": 0, "max_new_tokens": 1, "batch_size": 16, "group_size": 16,
        "steps": 40, "lr": 3e-3, "lr_warmup_steps": 0, "eval_every": 0, "eval_prompts": 4, "eval_k": 2,
        "checkpoint_every": 0, "seed": 3, **overrides,
    })
    sink = JsonlSink(tmp_path / "run")
    LocalEngine(config, tmp_path / "run", sink, var_dir=var_dir).run()
    return [e["summary"]["train"]["reward_mean"] for e in read_events(sink.path) if e["event"] == "step"]


def test_uniform_grpo_learns_a_reward_it_can_learn(tmp_path, var_dir):
    rewards = rewards_per_step(tmp_path, var_dir)
    start, end = float(np.mean(rewards[:3])), float(np.mean(rewards[-5:]))
    assert start < 0.25, rewards[:3]  # about 1 in 15 by chance
    assert end > 0.8, (start, end, rewards)


def test_the_learning_rate_warmup_slows_the_first_steps(tmp_path, var_dir):
    """With a warm-up as long as the run, the learning rate stays below lr: less progress."""
    fast = rewards_per_step(tmp_path / "fast", var_dir, steps=12)
    slow = rewards_per_step(tmp_path / "slow", var_dir, steps=12, lr_warmup_steps=200)
    assert np.mean(fast[-3:]) > np.mean(slow[-3:]) + 0.2, (fast, slow)
