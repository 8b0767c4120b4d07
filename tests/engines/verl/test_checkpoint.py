"""Selector state through verl's checkpoint callback and resume.

The callback is built by verl's own ``build_checkpoint_callback`` from
``trainer.checkpoint_callback_class`` in a config composed against ppo_trainer.yaml, and
``on_save`` is called with the keyword arguments ``_save_checkpoint`` passes. The resume
side runs our ``EdgeplaneTrainer._load_checkpoint`` on a real instance whose verl part
(``PPOTrainer._load_checkpoint``: worker groups load actor weights, needs GPUs) is replaced
by a stand-in that only sets ``global_steps`` as verl does from the ``global_step_{N}`` folder.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("verl")


def _config(tmp_path, resume_mode="auto"):
    from workers.engines.verl.checkpoint import CALLBACK_FQN
    from workers.engines.verl.launch import compose_overrides

    return compose_overrides([
        "actor_rollout_ref.rollout.n=4", "data.train_batch_size=8",
        f"trainer.checkpoint_callback_class={CALLBACK_FQN}", f"trainer.default_local_dir={tmp_path}",
        f"trainer.resume_mode={resume_mode}", """+edgeplane.methods='{"lze": {"prune": true}}'""",
    ])


def _trained_pipeline(config):
    from workers.engines.verl.edgeplane_config import build_pipeline

    pipeline = build_pipeline(config)
    keys = [f"prompt-{i}" for i in range(6)]
    pipeline.ledger.observe(keys, np.array([0, 1, 2, 3, 4, 4]), np.full(6, 4), step=0, epoch=0,
                            response_entropy=np.linspace(0.1, 0.6, 6))
    pipeline.rng.random(17)  # the RNG has moved on
    pipeline.step = 5
    return pipeline


class _Trainer:
    def __init__(self, pipeline):
        self.pipeline = pipeline


def test_on_save_then_resume_restores_the_pipeline(tmp_path, monkeypatch):
    from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from workers.engines.verl.checkpoint import STATE_FILE, SelectionCheckpointCallback
    from workers.engines.verl.trainer import EdgeplaneTrainer

    config = _config(tmp_path)
    callback = build_checkpoint_callback(config)
    assert isinstance(callback, SelectionCheckpointCallback)
    saved = _trained_pipeline(config)
    folder = tmp_path / "global_step_5"
    callback.on_save(trainer=_Trainer(saved), global_step=5, checkpoint_dir=str(folder), async_save=False)
    assert (folder / STATE_FILE).exists() and not list(folder.glob("*.tmp"))

    def verl_load(self):  # stand-in for verl's: global step from the latest global_step_{N} folder
        self.global_steps = 5

    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", verl_load)
    trainer = object.__new__(EdgeplaneTrainer)
    trainer.config = config
    trainer.pipeline = None
    trainer.prompt_pool = None
    trainer._load_checkpoint()

    restored = trainer.pipeline
    assert restored is not None
    assert list(restored.selectors) == ["lze"] and restored.step == 5
    for column in ("p0", "ema"):
        np.testing.assert_array_equal(restored.ledger.column(column), saved.ledger.column(column))
    assert restored.ledger.slots(["prompt-3"], create=False).tolist() == saved.ledger.slots(["prompt-3"]).tolist()
    assert restored.rng.random() == saved.rng.random()


def test_resume_without_state_file_or_disabled_starts_fresh(tmp_path):
    from workers.engines.verl.checkpoint import restore_pipeline

    (tmp_path / "global_step_3").mkdir()
    assert restore_pipeline(_config(tmp_path), 3) is None  # warned, fresh selectors
    assert restore_pipeline(_config(tmp_path), 0) is None  # training from scratch
    assert restore_pipeline(_config(tmp_path, "disable"), 3) is None
