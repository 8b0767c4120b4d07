"""verl's metric names onto ours: validation metrics as verl computes them, timers, actor metrics."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("verl")

from workers.engines.verl.report import evaluation_record, phase_seconds, train_summary
from workers.selection.metrics import pass_at_k


def test_validation_metrics_computed_by_verl_become_our_evaluation_record():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    k = 4
    # Two data sources; per prompt, k sampled answers scored 0/1 (what the reward loop returns).
    scores = {("edgeplane/add", 0): [1, 1, 0, 1], ("edgeplane/add", 1): [0, 0, 0, 0],
              ("edgeplane/mul", 2): [1, 0, 0, 0], ("edgeplane/mul", 3): [1, 1, 1, 1]}
    sources, uids, rewards = [], [], []
    for (source, prompt), answers in scores.items():
        for answer in answers:
            sources.append(source)
            uids.append(f"u{prompt}")
            rewards.append(float(answer))
    trainer = object.__new__(PPOTrainerSync)  # _val_metrics_update reads nothing of the trainer
    metrics = PPOTrainer._val_metrics_update(trainer, np.array(sources), np.array(uids), {"reward": rewards}, [])
    assert "val-core/edgeplane/add/reward/mean@4" in metrics  # verl's own names, data sources with a slash

    record = evaluation_record(20, {**metrics, "timing_s/testing": 3.5}, k=k, prompts=4)
    per_source_mean = [np.mean([np.mean(a) for (s, _), a in scores.items() if s == src])
                       for src in ("edgeplane/add", "edgeplane/mul")]
    assert record["pass_at_1"] == pytest.approx(np.mean(per_source_mean))
    # verl's best@k is a bootstrap estimate; with k samples of k it is close to the unbiased pass@k.
    exact = np.mean([np.mean([pass_at_k(k, int(sum(a)), k) for (s, _), a in scores.items() if s == src])
                     for src in ("edgeplane/add", "edgeplane/mul")])
    assert record["pass_at_k"] == pytest.approx(exact, abs=0.1)
    assert record["step"] == 20 and record["k"] == k and record["seconds"] == 3.5
    assert evaluation_record(21, {"actor/pg_loss": 0.1}, k=k, prompts=4) is None  # no validation this step


def test_actor_metrics_and_timers_map_onto_our_names_in_device_seconds():
    metrics = {"actor/pg_loss": 0.25, "actor/grad_norm": 1.5, "actor/pg_clipfrac": 0.1, "actor/entropy": 0.7,
               "actor/ppo_kl": float("nan"), "critic/score/mean": 0.4}
    summary = train_summary(metrics, device_seconds_total=96.0)
    assert summary["loss"] == 0.25 and summary["grad_norm"] == 1.5 and summary["clip_fraction"] == 0.1
    assert summary["entropy_mean"] == 0.7 and summary["approx_kl"] is None  # not finite: not a number to store
    assert summary["device_seconds_total"] == 96.0

    timing = {"gen": 10.0, "reward": 1.0, "old_log_prob": 2.0, "adv": 0.5, "update_actor": 6.0, "step": 21.0}
    seconds = phase_seconds(timing, select_seconds=0.5, gpus=8)
    assert seconds == {"select": 4.0, "generate": 80.0, "reward": 8.0, "update": 68.0, "checkpoint": 0.0,
                       "other": 8.0}


def test_the_model_is_counted_without_loading_weights(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from workers.engines.verl.report import count_parameters

    config = GPT2Config(vocab_size=103, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    config.save_pretrained(tmp_path)  # a config only: no weights on disk
    expected = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert count_parameters(str(tmp_path)) == expected
    assert count_parameters(str(tmp_path / "missing")) == 0  # warned; FLOPs estimates 0
