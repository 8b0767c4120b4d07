"""Remake the built-in warm start (warm_start.py): train the default warm-up from scratch.

    python -m workers.engines.local.warm_start_remake [--out DIR] [--set NAME=VALUE ...]

Trains the tiny model's warm-up with RunConfig's defaults on add_aligned (4,900 supervised
steps: minutes on a few CPU cores) through the engine's own warm-up, measures pass@1 per level
on the default held-out split in full precision and again after the cast to half precision,
writes ``<key>.pt`` (half precision, at most 1 MB) and ``<key>.json`` (the manifest), removes the
orphaned warm starts when writing into the shipped folder, and prints the figures and the size.
``--set`` changes a config field (to try the command quickly: ``--set warmup_steps=20``).
``--from var/warmup/<key>.pt`` converts a full-precision warm-up the engine already trained for
the same key instead of training again (the manifest says which).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from workers.engines.config import ConfigError, RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.local.evaluate import evaluate
from workers.engines.local.model import Policy
from workers.engines.local.warm_start import MAX_BYTES, REMAKE, SETTINGS, SHIPPED, WARMUP_VERSION, half
from workers.engines.telemetry import JsonlSink
from workers.problems.dataset import PromptRecord
from workers.problems.verifiers import get_verifier

# What the remake measures, on the config's held-out split: pass@1 per level, greedy
# (temperature 0.01: the argmax) and sampled (temperature 1, EVAL_K samples a prompt), each from
# a generator with a fixed seed, so the same weights give the same figures.
EVAL_K = 8
EVAL_SEED = 1234
GREEDY_TEMPERATURE = 0.01


def pass_rates(policy: Policy, records: Sequence[PromptRecord], *, max_new_tokens: int,
               k: int = EVAL_K, seed: int = EVAL_SEED) -> dict[str, dict[str, float]]:
    """Pass@1 per level ("2".."6" digits) and overall, greedy and sampled, with fixed seeds."""
    verifier = get_verifier("exact")
    out: dict[str, dict[str, float]] = {}
    for mode, temperature, samples in (("greedy", GREEDY_TEMPERATURE, 1), ("sampled", 1.0, k)):
        result = evaluate(policy, list(records), verifier, k=samples, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=1.0, generator=torch.Generator().manual_seed(seed))
        rates = {level: round(v["pass_at_1"], 4) for level, v in sorted(result["by_difficulty"].items())}
        out[mode] = {**rates, "all": round(result["pass_at_1"], 4)}
    return out


def differences(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """|a - b| per "mode/level" over what both measured."""
    return {f"{mode}/{level}": abs(a[mode][level] - b[mode][level])
            for mode in a if mode in b for level in a[mode] if level in b[mode]}


def remake(*, out: Path = SHIPPED, overrides: Mapping[str, Any] | None = None, eval_prompts: int = 0,
           prune: bool | None = None, source: Path | None = None, log: Any = print) -> dict[str, Any]:
    """Train the warm-up from scratch (the defaults on add_aligned, with ``overrides``), write
    ``out/<key>.pt`` (half precision) and ``out/<key>.json``; returns the manifest.

    ``eval_prompts``: held-out prompts the pass rates are measured on (0: the config's
    test split). ``prune``: remove other warm starts in ``out`` (default: when ``out`` is the
    shipped folder, so one warm start ships). ``source``: a full-precision warm-up the engine
    already trained for this key (a var/warmup/<key>.pt cache), converted instead of training."""
    config = RunConfig.from_mapping({"task": "add_aligned", **(overrides or {})})
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="warm-start-") as scratch:
        var = Path(scratch) / "var"
        engine = LocalEngine(config, Path(scratch) / "run", JsonlSink(Path(scratch) / "run"), var_dir=var)
        engine.shipped_warm_starts = None  # train from scratch (or take ``source``), whatever ships
        key = engine.warmup_key()
        if key is None:
            raise ValueError("this config has no warm-up to ship (a tiny model with warm-up steps is needed)")
        if source is not None:
            if Path(source).name != f"{key}.pt":
                raise ValueError(f"{source} is not this config's warm-up: its cache file is named {key}.pt")
            (var / "warmup").mkdir(parents=True)
            shutil.copyfile(source, var / "warmup" / f"{key}.pt")  # the engine's own cache lookup loads it
        start = time.perf_counter()
        figures = engine._warm_up()
        seconds = time.perf_counter() - start
        records = engine.test[:eval_prompts] if eval_prompts else engine.test
        full = pass_rates(engine.policy, records, max_new_tokens=config.max_new_tokens)
        fp16 = half(engine.policy.model.state_dict())
        engine.policy.model.load_state_dict({name: value.float() for name, value in fp16.items()})
        halved = pass_rates(engine.policy, records, max_new_tokens=config.max_new_tokens)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{key}.pt"
    partial = path.with_suffix(".partial")
    torch.save({"model": fp16, "loss": figures["warmup_loss"], "steps": int(figures["warmup_steps"])}, partial)
    size = partial.stat().st_size
    if size > MAX_BYTES:
        partial.unlink()
        raise ValueError(f"the half-precision warm start is {size} bytes, over the {MAX_BYTES} a shipped one may "
                         "have: ship a smaller model's, or none")
    partial.replace(path)
    defaults = {f["name"]: f["default"] for f in RunConfig.describe()}
    manifest = {
        "key": key,
        "family": config.task,
        "config": {name: getattr(config, name) for name in SETTINGS},
        "differs_from_defaults": {name: getattr(config, name) for name in SETTINGS
                                  if getattr(config, name) != defaults[name]},
        "warmup_version": WARMUP_VERSION,
        "warmup_loss": round(figures["warmup_loss"], 6),
        "warmup_seconds": round(seconds, 1),
        "made_from": f"the full-precision warm-up {source}" if source is not None else "trained from scratch",
        "bytes": size,
        "evaluation": {"split": "the config's held-out split", "prompts": len(records), "max_new_tokens":
                       config.max_new_tokens, "greedy_temperature": GREEDY_TEMPERATURE, "sampled_k": EVAL_K,
                       "seed": EVAL_SEED, "measure": "pass@1 per level (digits) and overall"},
        "pass_rates": {"float32": full, "float16": halved},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "command": REMAKE + "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in (overrides or {}).items())
        + (f" --from {shlex.quote(str(source))}" if source is not None else ""),
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / f"{key}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if (out.resolve() == SHIPPED) if prune is None else prune:
        for other in out.glob("*.pt"):
            if other.stem != key:
                other.unlink()
                other.with_suffix(".json").unlink(missing_ok=True)
                log(f"removed the orphaned warm start {other.name}")
    how = f"converted from {source}" if source is not None else f"trained in {seconds:.0f} s"
    log(f"warm start {key}: {size / 1024:.0f} KiB at {path}, loss {figures['warmup_loss']:.4f}, {how}")
    for precision, rates in manifest["pass_rates"].items():
        for mode, by_level in rates.items():
            log(f"  {precision:7s} {mode:7s} pass@1 " + "  ".join(f"{level} {v:.3f}" for level, v in by_level.items()))
    return manifest


def _setting(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set wants NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.engines.local.warm_start_remake",
                                     description="Train the built-in warm start from scratch and write it, in half "
                                                 "precision, with its manifest.")
    parser.add_argument("--out", type=Path, default=SHIPPED, help=f"folder to write into (default {SHIPPED})")
    parser.add_argument("--set", dest="overrides", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                      help="a config field other than its default (for trying the command: warmup_steps=20)")
    parser.add_argument("--from", dest="source", type=Path, default=None, metavar="CACHE",
                        help="convert this full-precision warm-up of the same key (var/warmup/<key>.pt, made by the "
                             "engine) instead of training from scratch")
    parser.add_argument("--eval-prompts", type=int, default=0,
                      help="held-out prompts the pass rates are measured on (default: the whole split)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        remake(out=args.out, overrides=dict(args.overrides), eval_prompts=args.eval_prompts, source=args.source)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
