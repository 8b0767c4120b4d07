"""A tiny but real run configuration: the built-in addition task, a one-layer GPT
warmed up for a few hundred supervised steps (cached once per test session)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from workers.engines.config import RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.telemetry import JsonlSink, read_events

TINY: dict[str, Any] = {
    "task": "add",
    "task_train_size": 24,  # 3 steps per epoch at B = 8: epochs turn over within a test
    "task_test_size": 16,
    "model_layers": 1,
    "model_dim": 32,
    "model_heads": 2,
    "warmup_steps": 200,
    "warmup_noise_steps": 0,
    "warmup_lr": 3e-3,
    "batch_size": 8,
    "group_size": 4,
    "steps": 3,
    "eval_every": 0,
    "eval_k": 2,
    "eval_prompts": 8,
    "checkpoint_every": 0,
    "max_new_tokens": 7,
    "lr": 1e-3,
    "lr_warmup_steps": 0,
}


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture
def run_tiny(tmp_path: Path, var_dir: Path):
    """Train a tiny run with overrides; returns (engine, status, events)."""

    def run(out: Path | None = None, resume: bool = False, beyond_ranges: dict[str, Any] | None = None,
            **overrides: Any):
        # beyond_ranges: values no config accepts (docs/limits.md), set past the check to make
        # the engine meet what its own guards must catch (a diverging update).
        config = dataclasses.replace(RunConfig.from_mapping({**TINY, **overrides}), **(beyond_ranges or {}))
        out = out or tmp_path / "run"
        sink = JsonlSink(out)
        if resume:
            engine = LocalEngine(config, out, sink, var_dir=var_dir)
            sink.truncate_after(engine.saved_step())
        else:
            engine = LocalEngine(config, out, sink, var_dir=var_dir)
        status = engine.run(resume=resume)
        return engine, status, read_events(sink.path)

    return run
