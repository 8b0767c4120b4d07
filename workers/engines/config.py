"""RunConfig: the one typed description of a training run, shared by every engine and
by the control plane, which validates user input with this same class.

Every field carries one line of help. ``RunConfig.from_mapping`` collects every problem
at once as (field, message) pairs whose message says what to change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.selection.decisions import Layer
from workers.selection.params import Bounds, check_number, field_kind, format_bounds, shown
from workers.selection.pipeline import Pipeline
from workers.selection.registry import DEFAULT_ADVANTAGE, REGISTRY

ENGINES = ("local", "verl")
DEVICES = ("auto", "cpu", "cuda")
REPO = Path(__file__).resolve().parents[2]
TASK_LEVELS_MAX = 32  # task_levels: at most this many levels, each in LEVEL_BOUNDS
LEVEL_BOUNDS: Bounds = (1, 64)
TEXT_MAX = 1024  # longest text field (model name, task, verifier, ...)
# Config files (RunConfig.load, manage.py launch_run --config): a run config is a few hundred
# bytes; these bound what a hostile file can make the YAML parser do.
CONFIG_FILE_MAX_BYTES = 64 * 1024
CONFIG_MAX_DEPTH = 8  # mappings and lists inside each other: selectors.<method>.<param> is 3
MODELS_ROOT_ENV = "EDGEPLANE_MODELS_ROOT"
MODEL_REFUSED = ("must be 'tiny' or the name of a model folder under the worker's models root "
                 f"({MODELS_ROOT_ENV}); no such model there. Copy the checkpoint folder into the models "
                 "root and give its name relative to it")


def _help(text: str, default: Any = dataclasses.MISSING, *, bounds: Bounds | None = None, **kwargs: Any) -> Any:
    """A field with one line of help and, for a number, its range (both ends accepted)."""
    metadata: dict[str, Any] = {"help": text}
    if bounds is not None:
        metadata["range"] = bounds
    if default is dataclasses.MISSING:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata)


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
    task_train_size: int = _help("prompts in the built-in task's train split", 4100, bounds=(1, 1_000_000))
    task_test_size: int = _help("prompts in the built-in task's held-out split", 500, bounds=(1, 100_000))
    task_levels: list[int] = _help("built-in task: difficulty levels (digit counts) the splits keep; empty: all",
                                   default_factory=list)
    verifier: str = _help("how a response is scored: exact, numeric or boxed", "exact")
    # the model
    model: str = _help("'tiny' (a small GPT trained from scratch here) or a Hugging Face checkpoint folder "
                       "under the worker's models root (EDGEPLANE_MODELS_ROOT), by its name there", "tiny")
    model_layers: int = _help("tiny model: transformer layers", 3, bounds=(1, 48))
    model_dim: int = _help("tiny model: embedding width", 96, bounds=(8, 2048))
    model_heads: int = _help("tiny model: attention heads", 4, bounds=(1, 32))
    warmup_steps: int = _help("supervised warm-up steps before RL (tiny model), cached under var/", 4500,
                              bounds=(0, 100_000))
    warmup_lr: float = _help("supervised warm-up learning rate (3e-3 sat on a loss plateau past 1,500 steps)", 1e-3,
                             bounds=(1e-07, 1))
    warmup_noise_steps: int = _help("second warm-up phase: steps on answers with noisy digits (greedy stays right, "
                                    "sampling spreads onto near misses: room for RL)", 400, bounds=(0, 100_000))
    warmup_noise: float = _help("second warm-up phase: chance that each answer digit is replaced", 0.12,
                                bounds=(0, 0.99))
    warmup_seed: int = _help("seed of the warm-up (the tiny model's start): runs that differ only in seed "
                             "start RL from one warm start, as RL runs start from one base model", 0,
                             bounds=(0, 2_147_483_647))
    # the RL step
    batch_size: int = _help("B: prompts per optimizer step", 32, bounds=(1, 8192))
    group_size: int = _help("N: rollouts per prompt (HORA: the average; the batch gets B x N)", 8, bounds=(2, 1024))
    selectors: dict[str, dict[str, Any]] = _help(
        "selection methods and their parameters, e.g. {hive: {}, hora: {n0: 4}, rlzvp: {alpha: 0.1}}",
        default_factory=lambda: {"grpo": {}},
    )
    steps: int = _help("optimizer steps to train", 100, bounds=(1, 1_000_000))
    lr: float = _help("AdamW learning rate of the RL updates", 2e-4, bounds=(1e-09, 1))
    lr_warmup_steps: int = _help("RL steps over which the learning rate rises linearly to lr (one full-lr Adam "
                                 "step from a warm start can wipe out the reward)", 20, bounds=(0, 1_000_000))
    weight_decay: float = _help("AdamW weight decay", 0.0, bounds=(0, 10))
    clip_low: float = _help("PPO clip below 1 (eps_low)", 0.2, bounds=(0, 0.99))
    clip_high: float = _help("PPO clip above 1 (eps_high, clip-higher)", 0.28, bounds=(0, 10))
    dr_grpo: bool = _help("Dr. GRPO: no std normalisation and a constant loss normaliser", False)
    minibatches: int = _help("optimizer updates per step, each on a slice of whole groups", 1, bounds=(1, 8192))
    grad_clip: float = _help("gradient-norm clip", 1.0, bounds=(1e-12, 10_000))  # tiny: updates that vanish
    temperature: float = _help("sampling temperature", 1.0, bounds=(0.01, 10))
    top_p: float = _help("nucleus sampling threshold (1.0 = off)", 1.0, bounds=(0.001, 1))
    max_new_tokens: int = _help("longest response in tokens", 8, bounds=(1, 131_072))
    # evaluation, checkpoints, reproducibility, budget
    eval_every: int = _help("evaluate on the held-out split every E steps (0 = only at the end)", 10,
                            bounds=(0, 1_000_000))
    eval_k: int = _help("samples per held-out prompt for Pass@k", 8, bounds=(1, 1024))
    eval_prompts: int = _help("held-out prompts evaluated (0 = all)", 500, bounds=(0, 1_000_000))
    checkpoint_every: int = _help("save a checkpoint every K steps (0 = only at the end)", 25, bounds=(0, 1_000_000))
    seed: int = _help("seed of data order, sampling and selection", 0, bounds=(0, 2_147_483_647))
    device: str = _help("auto, cpu or cuda", "auto")
    cpu_threads: int = _help("torch CPU threads (0 = torch's default); 1 is fastest on a busy 2-core machine", 0,
                             bounds=(0, 1024))
    max_device_hours: float = _help("stop the run once it has used this many device-hours (0 = no cap)", 0.0,
                                    bounds=(0, 1_000_000))
    audit_share: float = _help("share of candidates sent past the pre-rollout filters as uniform draws, which "
                               "measure the savings against dynamic sampling (0: no audit, no such figure)", 0.05,
                               bounds=(0, 0.99))

    # -- loading and validation ----------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RunConfig:
        """The config of ``values``, or ConfigError listing every problem (``problems``)."""
        config, errors = cls._checked(values)
        if errors or config is None:
            raise ConfigError(errors)
        return config

    @classmethod
    def problems(cls, values: Any) -> list[FieldError]:
        """Every problem of a config mapping at once, each naming its field and the fix (empty:
        it makes a run): unknown fields, values of the wrong kind or out of range, then the
        checks across fields and the composition of the methods, all of them, not the first."""
        return cls._checked(values)[1]

    @classmethod
    def _checked(cls, values: Any) -> tuple[RunConfig | None, list[FieldError]]:
        if not isinstance(values, dict):
            return None, [FieldError("config", "must be a mapping of field names to values")]
        known = {f.name: f for f in dataclasses.fields(cls)}
        errors = [
            FieldError(name, f"unknown field; did you mean one of {', '.join(_close(name, known))}?")
            for name in values if name not in known
        ]
        clean: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                continue
            converted, problem = _coerce(value, known[name].type, known[name].metadata.get("range"))
            if problem:
                errors.append(FieldError(name, problem))
            else:
                clean[name] = converted
        config = cls(**clean)
        # The well-typed fields are checked too (a refused field takes its default there), so
        # every problem is reported at once; a refused field's own is not said twice.
        refused = {e.field for e in errors}
        errors.extend(e for e in config.field_problems() if e.field not in refused)
        return config, errors

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """From a YAML or JSON file (bounded: see ``load_config_file``)."""
        return cls.from_mapping(load_config_file(path))

    def validate(self) -> None:
        errors = self.field_problems()
        if errors:
            raise ConfigError(errors)

    def field_problems(self) -> list[FieldError]:
        """Every problem of this config's values: ranges, checks across fields, the methods'
        parameters and their composition, and what the engine cannot run."""
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
        need(self.model == "tiny" or resolve_model(self.model) is not None, "model", MODEL_REFUSED)
        from workers.problems.verifiers import VERIFIERS

        need(self.verifier in VERIFIERS, "verifier", f"must be one of {', '.join(VERIFIERS)}")
        for f in dataclasses.fields(self):
            value, bounds = getattr(self, f.name), f.metadata.get("range")
            if bounds is not None:  # also for a RunConfig built in code, not from a mapping
                _, problem = check_number(value, field_kind(f.type), bounds)
                need(not problem, f.name, problem)
            elif isinstance(value, str):
                need(len(value) <= TEXT_MAX, f.name, f"at most {TEXT_MAX} characters, got {len(value)}")
        need(self.model_dim % max(self.model_heads, 1) == 0, "model_heads",
             f"model_dim ({self.model_dim}) must be divisible by model_heads ({self.model_heads})")
        need(self.minibatches <= self.batch_size, "minibatches",
             f"at most batch_size ({self.batch_size}): each mini-batch holds whole groups")
        for problem in Pipeline.problems(self.selectors, batch_size=self.batch_size, group_size=self.group_size,
                                         audit_share=self.audit_share):  # every composition problem at once
            own = problem.field in ("selectors", "batch_size", "group_size", "audit_share")
            error = FieldError(("" if own else "selectors.") + problem.field, problem.message)
            if error not in errors:  # B, N or the audit share out of range: said once, by their range
                errors.append(error)
        composed = not any(e.field == "selectors" or e.field.startswith("selectors.") for e in errors)
        if self.engine == "verl":  # what the verl engine would refuse at launch, said now
            from workers.engines.verl.methods import composition_problem, unavailable

            missing = unavailable(self.selectors)
            errors.extend(FieldError(f"selectors.{name}", reason) for name, reason in missing.items())
            if composed and not missing:
                problem = composition_problem(Pipeline(self.selector_params(), batch_size=self.batch_size,
                                                       group_size=self.group_size, audit_share=self.audit_share))
                need(problem is None, "selectors", problem or "")
        return errors

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

    def model_dir(self) -> str:
        """'tiny', or the model folder's resolved path under the models root (checked again
        here, at load time: the folder may have changed since the run was validated)."""
        if self.model == "tiny":
            return "tiny"
        path = resolve_model(self.model)
        if path is None:
            raise ConfigError([FieldError("model", MODEL_REFUSED)])
        return str(path)

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
            out.append({"name": f.name, "default": default, "help": f.metadata.get("help", ""),
                        "kind": field_kind(f.type), "range": f.metadata.get("range")})
        return out


def _close(name: str, known: dict[str, Any]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.5) or sorted(known)[:5]


def _coerce(value: Any, expected: Any, bounds: Bounds | None = None) -> tuple[Any, str]:
    """Check a raw value against a field's annotation and range; ints are accepted for floats,
    NaN, infinity, bools, lists and mappings never where a number belongs."""
    kind = field_kind(expected)
    if kind == "bool":
        return (value, "") if isinstance(value, bool) else (value, f"must be true or false, got {shown(value)}")
    if kind in ("int", "float"):
        return check_number(value, kind, bounds)
    if kind == "list[int]":
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            return (value, f"must be a list of whole numbers, got {shown(value)}")
        if len(value) > TASK_LEVELS_MAX:
            return (value, f"at most {TASK_LEVELS_MAX} entries, got {len(value)}")
        outside = [v for v in value if not LEVEL_BOUNDS[0] <= v <= LEVEL_BOUNDS[1]]
        if outside:
            return (value, f"each entry must lie in {format_bounds(LEVEL_BOUNDS)}, got {shown(outside[0])}")
        return (list(value), "")
    if kind == "str":
        if not isinstance(value, str):
            return (value, f"must be text, got {shown(value)}")
        if len(value) > TEXT_MAX:
            return (value, f"at most {TEXT_MAX} characters, got {len(value)}")
        return (value, "")
    if kind.startswith("dict"):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ({v: {} for v in value}, "")  # a plain list of method names
        if not isinstance(value, dict) or not all(isinstance(v, dict) or v is None for v in value.values()):
            return (value, "must map method names to their parameters, e.g. {hora: {n0: 4}}")
        return ({k: dict(v or {}) for k, v in value.items()}, "")
    return (value, "")


# -- the models root ------------------------------------------------------------------------
def models_root() -> Path:
    """Where the worker loads models from: $EDGEPLANE_MODELS_ROOT, else <var>/models (var being
    $EDGEPLANE_VAR_DIR or the repository's var/), as controlplane.settings reads it."""
    configured = os.environ.get(MODELS_ROOT_ENV)
    if configured:
        return Path(configured)
    return Path(os.environ.get("EDGEPLANE_VAR_DIR") or REPO / "var") / "models"


def resolve_model(name: str, root: Path | None = None) -> Path | None:
    """The model folder ``name`` names under the models root, symlinks resolved; None for an
    absolute path, a name that leaves the root (``..``, a symlink out) or no folder. Callers
    give one message for every None, so a refusal never tells whether a path exists."""
    if not name or "\x00" in name or Path(name).is_absolute() or name.startswith("~"):
        return None
    try:
        base = (root or models_root()).resolve()
        path = (base / name).resolve()
        inside = path != base and path.is_relative_to(base) and path.is_dir()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long
        return None
    return path if inside else None


# -- config files ---------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors or aliases (an alias bomb expands a few hundred
    bytes into gigabytes) and with a depth limit (the composer recurses once per level)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigFileError("anchors and aliases (&name, *name) are not accepted in a run config: "
                                  "write each value out")
        depth = getattr(self, "_depth", 0)
        if depth >= CONFIG_MAX_DEPTH:
            raise ConfigFileError(f"nested deeper than {CONFIG_MAX_DEPTH} levels; a run config is a flat mapping "
                                  "with selectors.<method>.<parameter> inside")
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


class ConfigFileError(ValueError):
    """A config file refused before it became a mapping (size, aliases, depth, syntax)."""


def parse_config_text(data: bytes | str, name: str = "config") -> dict[str, Any]:
    """A YAML or JSON run config as a mapping, bounded in size, depth and expansion; raises
    ConfigError (field "config") naming the file and what to change."""
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    if size > CONFIG_FILE_MAX_BYTES:
        raise ConfigError([FieldError("config", f"{name} is {size} bytes, over the limit of {CONFIG_FILE_MAX_BYTES} "
                                                "for a run config")])
    try:
        text = data if isinstance(data, str) else data.decode("utf-8")
        values = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except ConfigFileError as exc:
        raise ConfigError([FieldError("config", f"{name}: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([FieldError("config", f"{name} is not UTF-8 text: {exc}")]) from exc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:  # ValueError: a 5,000-digit number
        raise ConfigError([FieldError("config", f"{name} is not valid YAML/JSON: {exc}")]) from exc
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError([FieldError("config", f"{name} must hold a mapping of RunConfig fields, "
                                                f"not a {type(values).__name__}")])
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """``parse_config_text`` of a file, read no further than the size limit."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([FieldError("config", f"no config file at {str(path)!r}")])
    with path.open("rb") as handle:
        data = handle.read(CONFIG_FILE_MAX_BYTES + 1)
    if len(data) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError([FieldError("config", f"{path} is over the limit of {CONFIG_FILE_MAX_BYTES} bytes "
                                                "for a run config")])
    return parse_config_text(data, str(path))


# -- the documented ranges ------------------------------------------------------------------
def ranges_markdown() -> str:
    """The tables of docs/limits.md between its ``ranges`` markers, generated from the fields
    (tests/engines/test_config_bounds.py checks that the page holds exactly this)."""
    lines = ["| field | kind | range | default |", "| --- | --- | --- | --- |"]
    for f in RunConfig.describe():
        if f["range"] is not None:
            lines.append(f"| `{f['name']}` | {f['kind']} | {format_bounds(f['range'])} | {f['default']!r} |")
    lines += ["", "| method parameter | kind | range | default |", "| --- | --- | --- | --- |"]
    from workers.selection.methods import BUILTIN

    for method in BUILTIN:  # the built-in methods; a plugin documents its own
        name = method.name
        for f in method.Params.describe():
            if f["range"] is not None:
                lines.append(f"| `{name}.{f['name']}` | {f['kind']} | {format_bounds(f['range'])} | "
                             f"{f['default']!r} |")
    return "\n".join(lines)
