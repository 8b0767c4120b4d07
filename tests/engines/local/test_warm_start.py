"""The built-in warm start ships with the code: the default warm-up on add_aligned, in half
precision, at most 1 MB. A run of the default settings loads it (no supervised steps); any
other warm-up trains as before; the remake command writes a loadable one. The full check that
a warm start remade from scratch behaves the same is bench/warm_start.py (minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workers.engines.config import RunConfig
from workers.engines.local import warm_start
from workers.engines.local.engine import LocalEngine
from workers.engines.local.warm_start_remake import pass_rates
from workers.engines.telemetry import JsonlSink
from workers.record import Control

ROOT = Path(__file__).resolve().parents[3]
# Loaded, the shipped warm start's pass@1 per level is within this of what the full-precision
# model measured when it was made (same prompts, same seeds): half precision moves few answers.
TOLERANCE = 0.05
FIX = f"run `{warm_start.REMAKE}` (minutes) and commit workers/engines/local/warm_starts/"


def shipped() -> dict:
    manifests = warm_start.manifests()
    assert len(manifests) == 1, f"one warm start ships, found {len(manifests)} manifests: {FIX}"
    return manifests[0]


class HeartbeatSink(JsonlSink):
    """The file sink, keeping the warm-up's heartbeats (what the control plane books)."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self.heartbeats: list[dict] = []

    def heartbeat(self, *, phase: str, detail: str, device_seconds: float | None = None,
                  warmup_step: int | None = None, warmup_steps: int | None = None) -> Control:
        self.heartbeats.append({"phase": phase, "detail": detail, "device_seconds": device_seconds,
                                "warmup_step": warmup_step, "warmup_steps": warmup_steps})
        return Control.CONTINUE


def engine_of(tmp_path: Path, name: str, **overrides) -> LocalEngine:
    config = RunConfig.from_mapping({"task": "add_aligned", **overrides})
    return LocalEngine(config, tmp_path / name, HeartbeatSink(tmp_path / name), var_dir=tmp_path / "var")


@pytest.fixture(scope="module")
def default_engine(tmp_path_factory) -> LocalEngine:
    return engine_of(tmp_path_factory.mktemp("default"), "run")


def test_it_is_at_most_one_megabyte_in_half_precision_and_a_binary_to_git():
    manifest = shipped()
    path = warm_start.SHIPPED / f"{manifest['key']}.pt"
    assert path.is_file(), f"{path} is missing: {FIX}"
    assert path.stat().st_size <= warm_start.MAX_BYTES == 1024 * 1024
    state = torch.load(path, weights_only=True)
    assert {value.dtype for value in state["model"].values()} == {torch.float16}
    assert state["steps"] == manifest["config"]["warmup_steps"] + manifest["config"]["warmup_noise_steps"]
    attributes = subprocess.run(["git", "check-attr", "binary", "--", str(path.relative_to(ROOT))], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    assert attributes.strip().endswith("binary: set"), attributes


def test_its_key_is_the_one_the_engine_computes_for_the_default_config(default_engine):
    manifest = shipped()
    key = default_engine.warmup_key()
    assert key == manifest["key"], (
        f"the default config's warm-up key is {key}, the shipped warm start's {manifest['key']}: the defaults, "
        f"the model or WARMUP_VERSION changed, which orphans it; {FIX}")
    # The control plane's forecast works it out from the config alone: the same key.
    assert warm_start.family_key({}, "add_aligned") == key
    assert warm_start.shipped_for({}, "add_aligned")
    assert manifest["warmup_version"] == warm_start.WARMUP_VERSION
    assert manifest["differs_from_defaults"] == {}


def test_a_default_run_loads_it_and_its_pass_rates_match_the_manifest(default_engine):
    manifest = shipped()
    figures = default_engine._warm_up()
    assert figures["warmup_cached"] == 1.0 and figures["warmup_shipped"] == 1.0
    assert figures["warmup_seconds"] == 0.0
    assert default_engine.sink.heartbeats == []  # no warm-up device time booked
    assert not (default_engine.var_dir / "warmup").exists()  # nothing trained, nothing written
    assert {p.dtype for p in default_engine.policy.model.parameters()} == {torch.float32}
    evaluation = manifest["evaluation"]
    records = default_engine.test[: evaluation["prompts"]]
    measured = pass_rates(default_engine.policy, records, max_new_tokens=evaluation["max_new_tokens"],
                          k=evaluation["sampled_k"], seed=evaluation["seed"])
    full = manifest["pass_rates"]["float32"]
    assert measured.keys() == full.keys() == {"greedy", "sampled"}
    for mode in full:
        assert measured[mode].keys() == full[mode].keys() and len(full[mode]) == 6, mode  # levels 2-6, all
        for level, expected in full[mode].items():
            assert measured[mode][level] == pytest.approx(expected, abs=TOLERANCE), (mode, level)
    # It is a model that answers: RL starts on a learning edge, not from nothing.
    assert full["greedy"]["digits=2"] > 0.5


@pytest.mark.parametrize("changed", [
    {"warmup_seed": 1}, {"warmup_steps": 4499}, {"warmup_noise_steps": 401}, {"warmup_noise": 0.2},
    {"warmup_lr": 2e-3}, {"model_dim": 64}, {"model_layers": 2}, {"model_heads": 2}, {"max_new_tokens": 60},
    {"task": "add"}, {"engine": "verl"},
])
def test_any_other_warm_up_is_not_the_shipped_one(changed):
    family = changed.get("task", "add_aligned")
    assert not warm_start.shipped_for(changed, family), changed


def test_a_users_own_warm_up_settings_train_from_scratch(tmp_path, default_engine):
    default_engine._warm_up()
    shipped_weights = {k: v.clone() for k, v in default_engine.policy.model.state_dict().items()}
    engine = engine_of(tmp_path, "own", warmup_steps=3, warmup_noise_steps=1, task_train_size=64, task_test_size=8)
    assert engine.warmup_key() != shipped()["key"]
    figures = engine._warm_up()
    assert figures["warmup_cached"] == 0.0 and "warmup_shipped" not in figures
    assert (tmp_path / "var" / "warmup" / f"{engine.warmup_key()}.pt").is_file()  # cached as before
    trained = engine.policy.model.state_dict()
    assert not all(torch.equal(trained[k], shipped_weights[k]) for k in trained)
    heartbeats = engine.sink.heartbeats
    assert heartbeats and all(h["phase"] == "warmup" for h in heartbeats)  # its device time is booked
    assert sum(h["device_seconds"] or 0.0 for h in heartbeats) > 0


def test_the_remake_command_writes_a_warm_start_a_run_loads(tmp_path):
    """The remake's code path end to end with tiny steps: the checkpoint, the manifest, the
    figures; an engine of that config then loads it, and a warm-up in var/ is preferred."""
    out = tmp_path / "made"
    tiny = {"model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 20, "warmup_noise_steps": 5}
    result = subprocess.run(
        [sys.executable, "-m", "workers.engines.local.warm_start_remake", "--out", str(out), "--eval-prompts", "10",
         *(arg for name, value in tiny.items() for arg in ("--set", f"{name}={value}"))],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (manifest_path,) = out.glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["differs_from_defaults"] == tiny
    assert manifest["evaluation"]["prompts"] == 10 and manifest["torch"] == torch.__version__
    assert set(manifest["pass_rates"]) == {"float32", "float16"}
    assert "--set warmup_steps=20" in manifest["command"]
    assert f"warm start {manifest['key']}" in result.stdout and "float16 greedy" in result.stdout
    assert (out / f"{manifest['key']}.pt").stat().st_size == manifest["bytes"] <= warm_start.MAX_BYTES
    assert warm_start.SHIPPED.joinpath(f"{shipped()['key']}.pt").is_file()  # the shipped one untouched

    engine = engine_of(tmp_path, "loads", task_train_size=64, task_test_size=8, **tiny)
    engine.shipped_warm_starts = out
    assert engine.warmup_key() == manifest["key"]
    assert engine._warm_up()["warmup_shipped"] == 1.0
    # A warm-up of the same key in var/ (full precision, made here) comes first.
    cache = tmp_path / "var" / "warmup" / f"{manifest['key']}.pt"
    cache.parent.mkdir(parents=True)
    torch.save({"model": engine.policy.model.state_dict(), "loss": 1.0}, cache)
    again = engine_of(tmp_path, "cached", task_train_size=64, task_test_size=8, **tiny)
    again.shipped_warm_starts = out
    figures = again._warm_up()
    assert figures["warmup_cached"] == 1.0 and "warmup_shipped" not in figures
