"""RunConfig: the one typed description of a training run, shared by every engine and
by the control plane, which validates user input with this same class.

Every field carries one line of help. ``RunConfig.from_mapping`` collects every problem
at once as (field, message) pairs whose message says what to change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.selection.decisions import Layer
from workers.selection.params import SelectionConfigError
from workers.selection.pipeline import Pipeline
from workers.selection.registry import DEFAULT_ADVANTAGE, REGISTRY

ENGINES = ("local", "verl")
DEVICES = ("auto", "cpu", "cuda")


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """Every problem of a config, each naming its field and the fix."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("invalid run config: " + "; ".join(str(e) for e in errors))

    def as_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for error in self.errors:
            out.setdefault(error.field, []).append(error.message)
        return out


@dataclass(frozen=True)
class RunConfig:
    # what to train on
    engine: str = _help("which engine trains: local (torch, CPU or one GPU) or verl (Ray + vLLM)", "local")
    task: str = _help("built-in task (add_aligned: the testbed; add, mul) used when no dataset is given",
                      "add_aligned")
    dataset: str = _help("local dataset file (JSONL, Parquet or CSV in verl's format); empty: the built-in task", "")
    eval_dataset: str = _help("held-out dataset file; empty: the built-in task's test split", "")
    task_train_size: int = _help("prompts in the built-in task's train split", 4100)
    task_test_size: int = _help("prompts in the built-in task's held-out split", 500)
    task_levels: list[int] = _help("built-in task: difficulty levels (digit counts) the splits keep; empty: all",
                                   default_factory=list)
    verifier: str = _help("how a response is scored: exact, numeric or boxed", "exact")
    # the model
    model: str = _help("'tiny' (a small GPT trained from scratch here) or a local Hugging Face checkpoint "
                       "directory", "tiny")
    model_layers: int = _help("tiny model: transformer layers", 3)
    model_dim: int = _help("tiny model: embedding width", 96)
    model_heads: int = _help("tiny model: attention heads", 4)
    warmup_steps: int = _help("supervised warm-up steps before RL (tiny model), cached under var/", 4500)
    warmup_lr: float = _help("supervised warm-up learning rate (3e-3 sat on a loss plateau past 1,500 steps)", 1e-3)
    warmup_noise_steps: int = _help("second warm-up phase: steps on answers with noisy digits (greedy stays right, "
                                    "sampling spreads onto near misses: room for RL)", 400)
    warmup_noise: float = _help("second warm-up phase: chance that each answer digit is replaced", 0.12)
    warmup_seed: int = _help("seed of the warm-up (the tiny model's start): runs that differ only in seed "
                             "start RL from one warm start, as RL runs start from one base model", 0)
    # the RL step
    batch_size: int = _help("B: prompts per optimizer step", 32)
    group_size: int = _help("N: rollouts per prompt (HORA: the average; the batch gets B x N)", 8)
    selectors: dict[str, dict[str, Any]] = _help(
        "selection methods and their parameters, e.g. {hive: {}, hora: {n0: 4}, rlzvp: {alpha: 0.1}}",
        default_factory=lambda: {"grpo": {}},
    )
    steps: int = _help("optimizer steps to train", 100)
    lr: float = _help("AdamW learning rate of the RL updates", 2e-4)
    lr_warmup_steps: int = _help("RL steps over which the learning rate rises linearly to lr (one full-lr Adam "
                                 "step from a warm start can wipe out the reward)", 20)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    clip_low: float = _help("PPO clip below 1 (eps_low)", 0.2)
    clip_high: float = _help("PPO clip above 1 (eps_high, clip-higher)", 0.28)
    dr_grpo: bool = _help("Dr. GRPO: no std normalisation and a constant loss normaliser", False)
    minibatches: int = _help("optimizer updates per step, each on a slice of whole groups", 1)
    grad_clip: float = _help("gradient-norm clip", 1.0)
    temperature: float = _help("sampling temperature", 1.0)
    top_p: float = _help("nucleus sampling threshold (1.0 = off)", 1.0)
    max_new_tokens: int = _help("longest response in tokens", 8)
    # evaluation, checkpoints, reproducibility, budget
    eval_every: int = _help("evaluate on the held-out split every E steps (0 = only at the end)", 10)
    eval_k: int = _help("samples per held-out prompt for Pass@k", 8)
    eval_prompts: int = _help("held-out prompts evaluated (0 = all)", 500)
    checkpoint_every: int = _help("save a checkpoint every K steps (0 = only at the end)", 25)
    seed: int = _help("seed of data order, sampling and selection", 0)
    device: str = _help("auto, cpu or cuda", "auto")
    cpu_threads: int = _help("torch CPU threads (0 = torch's default); 1 is fastest on a busy 2-core machine", 0)
    max_device_hours: float = _help("stop the run once it has used this many device-hours (0 = no cap)", 0.0)
    audit_share: float = _help("share of candidates sent past the pre-rollout filters as uniform draws, which "
                               "measure the savings against dynamic sampling (0: no audit, no such figure)", 0.05)

    # -- loading and validation ----------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RunConfig:
        if not isinstance(values, dict):
            raise ConfigError([FieldError("config", "must be a mapping of field names to values")])
        known = {f.name: f for f in dataclasses.fields(cls)}
        errors = [
            FieldError(name, f"unknown field; did you mean one of {', '.join(_close(name, known))}?")
            for name in values if name not in known
        ]
        clean: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                continue
            expected = known[name].type
            converted, problem = _coerce(value, expected)
            if problem:
                errors.append(FieldError(name, problem))
            else:
                clean[name] = converted
        config = cls(**clean)
        try:
            config.validate()  # the well-typed fields, so every problem is reported at once
        except ConfigError as exc:
            errors.extend(e for e in exc.errors if e.field not in {b.field for b in errors})
        if errors:
            raise ConfigError(errors)
        return config

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """From a YAML or JSON file."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([FieldError("config", f"{path} is not valid YAML/JSON: {exc}")]) from exc
        return cls.from_mapping(values)

    def validate(self) -> None:
        errors: list[FieldError] = []

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                errors.append(FieldError(name, message))

        need(self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}")
        need(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        need(bool(self.dataset) or bool(self.task), "task", "give a built-in task or a dataset file")
        if not self.dataset:
            from workers.problems.arithmetic import TASKS

            need(self.task in TASKS, "task", f"unknown built-in task; choose one of {', '.join(TASKS)}")
            if self.task in TASKS:
                levels = TASKS[self.task].levels
                need(set(self.task_levels) <= set(levels), "task_levels",
                     f"task {self.task} has levels {', '.join(map(str, levels))}")
        for name in ("dataset", "eval_dataset"):
            path = getattr(self, name)
            need(not path or Path(path).is_file(), name, f"no file at {path!r}: give a local path the worker can read")
        need(self.model == "tiny" or Path(self.model).is_dir(), "model",
             f"'tiny' or a local checkpoint directory; {self.model!r} is neither")
        from workers.problems.verifiers import VERIFIERS

        need(self.verifier in VERIFIERS, "verifier", f"must be one of {', '.join(VERIFIERS)}")
        for name in ("batch_size", "steps", "max_new_tokens", "minibatches", "eval_k", "model_layers",
                     "model_dim", "model_heads", "task_train_size", "task_test_size"):
            need(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "warmup_noise_steps", "warmup_seed", "lr_warmup_steps", "eval_every",
                     "checkpoint_every", "eval_prompts", "seed", "cpu_threads"):
            need(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        need(self.model_dim % max(self.model_heads, 1) == 0, "model_heads",
             f"model_dim ({self.model_dim}) must be divisible by model_heads ({self.model_heads})")
        need(self.minibatches <= self.batch_size, "minibatches",
             f"at most batch_size ({self.batch_size}): each mini-batch holds whole groups")
        for name in ("lr", "warmup_lr", "temperature", "grad_clip"):
            need(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        need(0 < self.top_p <= 1, "top_p", f"must lie in (0, 1], got {self.top_p}")
        need(0 <= self.clip_low < 1, "clip_low", f"must lie in [0, 1), got {self.clip_low}")
        need(self.clip_high >= 0, "clip_high", f"must be >= 0, got {self.clip_high}")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.warmup_noise < 1, "warmup_noise", f"must lie in [0, 1), got {self.warmup_noise}")
        need(self.max_device_hours >= 0, "max_device_hours", "must be >= 0 (0 = no cap)")
        try:
            Pipeline(self.selectors, batch_size=max(self.batch_size, 1), group_size=self.group_size,
                     audit_share=self.audit_share)
        except SelectionConfigError as exc:
            for problem in exc.problems:  # every composition problem at once
                own = problem.field in ("selectors", "batch_size", "group_size", "audit_share")
                errors.append(FieldError(("" if own else "selectors.") + problem.field, problem.message))
        if errors:
            raise ConfigError(errors)

    # -- derived ------------------------------------------------------------------------
    def selector_params(self) -> dict[str, dict[str, Any]]:
        """Selectors with Dr. GRPO folded into the advantage method's parameters."""
        methods = {name: dict(params or {}) for name, params in self.selectors.items()}
        if self.dr_grpo:
            # Every chosen advantage method with a std normalisation turns it off; a run that
            # names none gets the default advantage (GRPO) with it off.
            advantage = [name for name in methods
                         if name in REGISTRY and Layer.ADVANTAGE in REGISTRY[name].layers]
            for name in advantage:
                if any(f["name"] == "norm_by_std" for f in REGISTRY[name].Params.describe()):
                    methods[name].setdefault("norm_by_std", False)
            if not advantage:
                methods[DEFAULT_ADVANTAGE] = {"norm_by_std": False}
        return methods

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *names: str) -> str:
        """Short hash of the named fields (all when none): cache keys, run identity."""
        values = self.to_dict()
        chosen = {n: values[n] for n in names} if names else values
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every field with its default and help: forms and docs read this."""
        out = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.append({"name": f.name, "default": default, "help": f.metadata.get("help", "")})
        return out


def _close(name: str, known: dict[str, Any]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.5) or sorted(known)[:5]


def _coerce(value: Any, expected: Any) -> tuple[Any, str]:
    """Check a raw value against a field's annotation; ints are accepted for floats."""
    kind = str(expected)
    if kind == "bool":
        return (value, "") if isinstance(value, bool) else (value, f"must be true or false, got {value!r}")
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, "") if ok else (value, f"must be a whole number, got {value!r}")
    if kind == "float":
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as text
            try:
                return (float(value), "")
            except ValueError:
                return (value, f"must be a number, got {value!r}")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value), "") if ok else (value, f"must be a number, got {value!r}")
    if kind == "list[int]":
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        return (list(value), "") if ok else (value, f"must be a list of whole numbers, got {value!r}")
    if kind == "str":
        return (value, "") if isinstance(value, str) else (value, f"must be text, got {value!r}")
    if kind.startswith("dict"):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ({v: {} for v in value}, "")  # a plain list of method names
        if not isinstance(value, dict) or not all(isinstance(v, dict) or v is None for v in value.values()):
            return (value, "must map method names to their parameters, e.g. {hora: {n0: 4}}")
        return ({k: dict(v or {}) for k, v in value.items()}, "")
    return (value, "")
