"""The warm-up cache is keyed by what determines the model, never by a file path: one
cached warm start serves every split size, level subset, RL seed and dataset file of a
family, and any change to what the warm-up trains makes a new one."""

from __future__ import annotations

from pathlib import Path

import torch

from workers.engines.config import RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.telemetry import JsonlSink
from workers.problems import arithmetic

SMALL = {"task": "add_aligned", "model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 20,
         "warmup_noise_steps": 5, "task_train_size": 64, "task_test_size": 8}


def warmed(tmp_path: Path, var_dir: Path, name: str, **overrides) -> tuple[dict[str, float], dict]:
    engine = LocalEngine(RunConfig.from_mapping({**SMALL, **overrides}), tmp_path / name,
                         JsonlSink(tmp_path / name), var_dir=var_dir)
    figures = engine._warm_up()
    return figures, {k: v.clone() for k, v in engine.policy.model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_warm_start_serves_every_split_seed_and_file_of_the_family(tmp_path):
    var_dir = tmp_path / "var"
    first, weights = warmed(tmp_path, var_dir, "first")
    assert first["warmup_cached"] == 0.0
    # another RL seed, split size and level subset: the same warm start, loaded
    for name, overrides in (("seed", {"seed": 3}), ("size", {"task_train_size": 32, "task_test_size": 4}),
                            ("levels", {"task_levels": [2, 3]})):
        figures, again = warmed(tmp_path, var_dir, name, **overrides)
        assert figures["warmup_cached"] == 1.0, name
        assert same(weights, again), name
    # the family's prompts from a dataset file, wherever it lies
    splits = arithmetic.builtin_task("add_aligned", seed=5, n_train=40, n_test=8)
    data = tmp_path / "somewhere" / "train.parquet"
    data.parent.mkdir()
    arithmetic.export_verl_parquet(splits.train, data)
    figures, again = warmed(tmp_path, var_dir, "file", dataset=str(data), eval_dataset=str(data))
    assert figures["warmup_cached"] == 1.0 and same(weights, again)


def test_what_the_warmup_trains_makes_a_new_one(tmp_path):
    var_dir = tmp_path / "var"
    _, weights = warmed(tmp_path, var_dir, "first")
    for name, overrides in (("warmup_seed", {"warmup_seed": 1}), ("noise", {"warmup_noise": 0.2}),
                            ("steps", {"warmup_steps": 21}), ("shape", {"model_dim": 48})):
        figures, other = warmed(tmp_path, var_dir, name, **overrides)
        assert figures["warmup_cached"] == 0.0, name
        assert not same(weights, other), name
