"""The telemetry record, defined once: what an engine sends per step, typed and versioned.

Both engines build a ``StepRecord`` the same way (``StepRecord.from_result``: the selection
pipeline's ``StepResult`` plus the engine's optimizer figures), every sink takes it (the
JSON-lines file and the HTTP sink write ``to_wire()``; the control plane's in-process sink
hands the object to the ingestion service), and the HTTP ingest reads a body back with
``StepRecord.from_wire``. The other events (evaluation, run started, checkpoint, heartbeat,
run finished) are small typed records beside it.

One NaN convention: a number that was not measured is ``None`` here and ``null`` on the
wire; every float in a record is finite. The conversion from numpy, torch or NaN happens
once, in ``finite`` (``wire_json`` for the open mappings), when a record is built from the
engine's numbers. A record that exists is valid: the rules run when it is constructed
(``__post_init__``), so an in-process record and one read from the wire are held to the
same rules and refused with the same ``RecordError``.

Wire versions: 1 is the unversioned record before this module (NaN as the string
``"NaN"``, ``summary.step`` and extra summary keys tolerated); 2 sends observations and
decisions as lists of row objects; 3 (``RECORD_VERSION``) sends them as columns (one list per
field, scores one list per score name), which is what a million-row step needs: read and checked
a column at a time, never a row object at a time. A version above ``RECORD_VERSION`` is
refused, naming both versions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, cast

import numpy as np

from workers.selection.accounting import StepAccounting
from workers.selection.decisions import Action, Layer
from workers.selection.ledger import Bucket
from workers.selection.pipeline import StepResult

RECORD_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)



class Control(StrEnum):
    """The control plane's answer to a step: what the engine does at the step boundary."""

    CONTINUE = "continue"
    CANCEL = "cancel"
    STOP_BUDGET = "stop_budget"


class RunStatus(StrEnum):
    """How a run ended, as an engine reports it (the control plane's RunStatus adds the states
    before and between: queued, starting, running, lost)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_STOPPED = "budget_stopped"


BUCKETS = Bucket.NAMES
LAYERS = tuple(layer.value for layer in Layer)
ACTIONS = tuple(action.value for action in Action)
FINISHED_STATUSES = tuple(status.value for status in RunStatus)
_V1_NAN = ("NaN", "Infinity", "-Infinity")  # how version 1 spelled a number it had not measured


class RecordError(ValueError):
    """A record that breaks the record's rules. ``where`` names the part (``summary``,
    ``observations[3]``), ``problem`` says what is wrong with it."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


# -- the one NaN convention ----------------------------------------------------------------------
def finite(value: Any) -> float | None:
    """A measured number as a finite float, or None where it was not measured.

    None, NaN and infinity give None; Python, numpy and torch scalars give a float. The
    one place where an engine's numbers enter a record.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool)):
        raise RecordError("number", f"expected a number, got {value!r}")
    number = float(value)
    return number if math.isfinite(number) else None


def wire_json(value: Any) -> Any:
    """A JSON-ready copy of an open structure (metrics, scores, an evaluation): floats through
    ``finite`` (NaN -> None), numpy scalars and arrays as Python, tuples as lists."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, Mapping):
        return {str(k): wire_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [wire_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return wire_json(value.tolist())
    return value


# -- the ranges: what every field of a record may hold ------------------------------------------
# One place for the bounds a number or a text must respect to enter a record, so that nothing
# a database column cannot hold (or no engine could have measured) is ever stored. A value
# beyond its range is refused with a RecordError naming the field (the HTTP ingest: a 400).
MAX_STEP = 10_000_000  # step, epoch, resumed_from_step, a checkpoint's or evaluation's step; Run.steps_completed
#                        (step + 1) and every step column are 32-bit integers, far above this
MAX_ATTEMPT = 10_000  # the attempt number an engine reports with each event
MAX_INT = 2**31 - 1  # a count stored in a 32-bit integer column: rollouts, groups, group size, k, prompts
MAX_TOKENS = 2**53  # token counts (64-bit columns) and parameters: the largest integer a JSON number holds exactly
MAX_SECONDS = 1e7  # seconds of one phase, device-seconds of one step or heartbeat (about 115 device-days)
MAX_DEVICE_SECONDS_TOTAL = 1e12  # a run's device-seconds so far (train.device_seconds_total)
MAX_FLOPS = 1e25  # a step's FLOPs estimate: 10,000 devices at 1e15 FLOP/s for 10 days are 1e25
MAX_MAGNITUDE = 1e15  # any other finite figure (rewards, losses, entropies, savings, estimates)
MAX_KEY = 255  # prompt_key (the prompt columns are varchar(255))
MAX_NAME = 255  # a key of seconds, metrics, scores, warm-up figures, by_difficulty (a dataset's difficulty tag)
MAX_PHASE = 64  # a heartbeat's phase
MAX_MESSAGE = 2000  # a decision's rendered message, one alert
MAX_DETAIL = 500  # a heartbeat's detail (shown as the run's status reason)
MAX_REASON = 4000  # a run's final reason (sinks cut longer ones before sending)
MAX_PATH = 4096  # a checkpoint's path
MAX_ENTRIES = 100_000  # entries of an open mapping or list (metrics, scores, seconds, by_difficulty: a dataset
#                         may tag every prompt with its own difficulty)
MAX_ALERTS = 1000  # alerts of one step
MAX_DEPTH = 8  # nesting of an open JSON value (by_difficulty, an evaluation's extra figures)
# Columns with a fixed width (controlplane.telemetry.models): method 16, reason 48 characters.
DECISION_WIDTHS = {"method": 16, "reason": 48}
# The ranges of the optimizer's figures (TrainStats); (low, high), both included.
TRAIN_RANGES: dict[str, tuple[float, float]] = {
    "reward_mean": (-MAX_MAGNITUDE, MAX_MAGNITUDE), "response_length_mean": (0.0, MAX_INT),
    "loss": (-MAX_MAGNITUDE, MAX_MAGNITUDE), "grad_norm": (0.0, MAX_MAGNITUDE), "clip_fraction": (0.0, 1.0),
    "entropy_mean": (-MAX_MAGNITUDE, MAX_MAGNITUDE), "approx_kl": (-MAX_MAGNITUDE, MAX_MAGNITUDE),
    "device_seconds_total": (0.0, MAX_DEVICE_SECONDS_TOTAL),
}
# The ranges of a step summary's counts, figures and estimates (StepSummary): counts of token
# columns are 64-bit, the other counts 32-bit; a saving is 1 - spent / yardstick, at most 1 and
# negative when a method spent more than its yardstick; shares and rates lie in [0, 1].
SAVING = (-MAX_MAGNITUDE, 1.0)
SHARE = (0.0, 1.0)
SUMMARY_RANGES: dict[str, tuple[float, float]] = {
    "tokens_generated": (0, MAX_TOKENS), "forward_tokens_extra": (0, MAX_TOKENS), "backward_tokens": (0, MAX_TOKENS),
    "parameters": (0, MAX_TOKENS), "prompt_tokens_generated": (0, MAX_TOKENS),
    "backward_prompt_tokens": (0, MAX_TOKENS), "backward_tokens_mixed": (0, MAX_TOKENS),
    "rollout_savings": SAVING, "rollout_savings_vs_dynamic_sampling": SAVING, "backward_savings_vs_mixed": SAVING,
    "flops_estimate": (0.0, MAX_FLOPS), "flops_uniform_estimate": (0.0, MAX_FLOPS),
    "device_seconds": (0.0, MAX_SECONDS), "rollouts_dynamic_sampling": (0.0, MAX_TOKENS),
    "mixed_rate_uniform": SHARE, "zero_variance_share_of_groups": SHARE, "effective_share_of_generated": SHARE,
}  # any other count: [0, MAX_INT]


# -- rules shared by construction and reading ----------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


def _count(where: str, name: str, value: Any, maximum: int = MAX_INT) -> None:
    if not _is_int(value) or not 0 <= value <= maximum:
        raise RecordError(where, f"{name} must be a whole number in [0, {maximum}], got {value!r}")


def _number(where: str, name: str, value: Any, *, optional: bool, low: float = -MAX_MAGNITUDE,
            high: float = MAX_MAGNITUDE) -> None:
    if value is None and optional:
        return
    if not _is_number(value) or not low <= value <= high:
        kind = "a finite number" + (" or null" if optional else "")
        raise RecordError(where, f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")


def _rate(where: str, name: str, value: Any, *, optional: bool) -> None:
    _number(where, name, value, optional=optional, low=0.0, high=1.0)


def _clean(where: str, name: str, value: str) -> None:
    """Text a database stores as it came: no NUL character (Postgres refuses it in text and
    JSON) and no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        raise RecordError(where, f"{name} must not contain a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(where, f"{name} is not valid UTF-8 text (a lone surrogate)") from None


def _text(where: str, name: str, value: Any, choices: tuple[str, ...] | None = None, *,
          max_length: int | None = None, empty: bool = True) -> None:
    if not isinstance(value, str):
        raise RecordError(where, f"{name} must be a string, got {value!r}")
    if choices is not None:
        if value not in choices:
            raise RecordError(where, f"{name} {value!r} is not one of {', '.join(choices)}")
        return
    if max_length is not None and len(value) > max_length:
        raise RecordError(where, f"{name} must be at most {max_length} characters, got {len(value)}")
    if not empty and not value:
        raise RecordError(where, f"{name} must not be empty")
    _clean(where, name, value)


def _numbers(where: str, name: str, value: Any, *, optional: bool, low: float = -MAX_MAGNITUDE,
             high: float = MAX_MAGNITUDE) -> None:
    if not isinstance(value, Mapping):
        raise RecordError(where, f"{name} must be an object of numbers, got {type(value).__name__}")
    if len(value) > MAX_ENTRIES:
        raise RecordError(where, f"{name} must have at most {MAX_ENTRIES} entries, got {len(value)}")
    for key, number in value.items():
        if not isinstance(key, str):
            raise RecordError(where, f"{name} keys must be strings, got {key!r}")
        _text(where, f"{name} key", key, max_length=MAX_NAME)
        _number(where, f"{name}[{key!r}]", number, optional=optional, low=low, high=high)


def _json(where: str, name: str, value: Any, depth: int = 0) -> None:
    """An open JSON value (by_difficulty, extra figures): at most MAX_DEPTH deep and MAX_ENTRIES
    wide, finite numbers, clean text."""
    if depth > MAX_DEPTH:
        raise RecordError(where, f"{name} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        _number(where, name, value, optional=False, low=-math.inf, high=math.inf)
    elif isinstance(value, str):
        _text(where, name, value, max_length=MAX_MESSAGE)
    elif isinstance(value, (list, tuple, Mapping)):
        if len(value) > MAX_ENTRIES:
            raise RecordError(where, f"{name} must have at most {MAX_ENTRIES} entries, got {len(value)}")
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for key, item in items:
            if isinstance(value, Mapping):
                if not isinstance(key, str):
                    raise RecordError(where, f"{name} keys must be strings, got {key!r}")
                _text(where, f"{name} key", key, max_length=MAX_NAME)
            _json(where, f"{name}[{key!r}]", item, depth + 1)
    else:
        raise RecordError(where, f"{name} must be JSON, got {type(value).__name__}")


# -- reading the wire -----------------------------------------------------------------------------
def _object(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecordError(where, f"must be an object, got {type(value).__name__}")
    return value


def _read_number(value: Any, version: int) -> Any:
    """A wire number: ints of float fields stay ints (equal as floats); version 1's "NaN" is None."""
    if version == 1 and isinstance(value, str) and value in _V1_NAN:
        return None
    return value


def _read_count(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() and value >= 0 else value


def _read_numbers(where: str, name: str, value: Any, version: int) -> dict[str, Any]:
    return {k: _read_number(v, version) for k, v in _object(f"{where}.{name}", value).items()}


def _unknown(where: str, data: Mapping[str, Any], known: set[str], version: int) -> None:
    extra = sorted(set(data) - known)
    if extra and version >= 2:
        raise RecordError(where, f"unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")


# -- the parts of a step --------------------------------------------------------------------------
TRAIN_FIELDS = ("reward_mean", "response_length_mean", "loss", "grad_norm", "clip_fraction", "entropy_mean",
                "approx_kl", "device_seconds_total")


@dataclass(frozen=True, slots=True)
class TrainStats:
    """The optimizer side of a step, the same names from both engines (None: not measured).

    ``reward_mean`` and ``response_length_mean`` are over every rollout generated this step;
    the others are the update's (verl: ``actor/pg_loss``, ``actor/grad_norm``,
    ``actor/pg_clipfrac``, ``actor/entropy``, ``actor/ppo_kl``; workers.engines.verl.report).
    ``device_seconds_total`` is the run's device-seconds so far, this step included.
    """

    reward_mean: float | None = None
    response_length_mean: float | None = None
    loss: float | None = None
    grad_norm: float | None = None
    clip_fraction: float | None = None
    entropy_mean: float | None = None
    approx_kl: float | None = None
    device_seconds_total: float | None = None

    def __post_init__(self) -> None:
        for name in TRAIN_FIELDS:
            low, high = TRAIN_RANGES[name]
            _number("summary.train", name, getattr(self, name), optional=True, low=low, high=high)

    @classmethod
    def measured(cls, values: Mapping[str, Any]) -> TrainStats:
        """From an engine's raw figures (floats, numpy or torch scalars, NaN): through ``finite``."""
        unknown = sorted(set(values) - set(TRAIN_FIELDS))
        if unknown:
            raise RecordError("summary.train",
                              f"unknown field(s) {', '.join(unknown)}; known: {', '.join(TRAIN_FIELDS)}")
        return cls(**{name: finite(value) for name, value in values.items()})

    def to_wire(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in TRAIN_FIELDS}

    @classmethod
    def from_wire(cls, data: Any, version: int = RECORD_VERSION) -> TrainStats:
        data = _object("summary.train", data)
        _unknown("summary.train", data, set(TRAIN_FIELDS), version)
        return cls(**{name: _read_number(data[name], version) for name in TRAIN_FIELDS if name in data})


def _kind(kind: str, **default: Any) -> Any:
    """A summary field and its kind: what its checks and its wire reading are."""
    return field(metadata={"kind": kind}, **default)


@dataclass(frozen=True, slots=True)
class StepSummary:
    """The step's accounting (workers.selection.accounting.StepAccounting and its derived
    figures), seconds by phase, the selectors' metrics, the optimizer's figures and, on the
    first step of a warmed-up run, the warm-up's figures."""

    rollouts_generated: int = _kind("count")
    tokens_generated: int = _kind("count")
    rollouts_effective: int = _kind("count")
    rollouts_trained: int = _kind("count")
    rollouts_uniform: int = _kind("count")
    groups_generated: int = _kind("count")
    groups_all_correct: int = _kind("count")
    groups_all_wrong: int = _kind("count")
    groups_trained: int = _kind("count")
    forward_tokens_extra: int = _kind("count")
    backward_tokens: int = _kind("count")
    rollout_savings: float = _kind("figure")
    flops_estimate: float = _kind("figure")
    flops_uniform_estimate: float = _kind("figure")
    device_seconds: float = _kind("figure")
    parameters: int = _kind("optional_count", default=0)
    prompt_tokens_generated: int = _kind("optional_count", default=0)
    backward_prompt_tokens: int = _kind("optional_count", default=0)
    groups_uniform: int = _kind("optional_count", default=0)
    groups_uniform_mixed: int = _kind("optional_count", default=0)
    groups_mixed_collected: int = _kind("optional_count", default=0)
    backward_tokens_mixed: int = _kind("optional_count", default=0)
    mixed_rate_uniform: float | None = _kind("estimate", default=None)
    rollouts_dynamic_sampling: float | None = _kind("estimate", default=None)
    rollout_savings_vs_dynamic_sampling: float | None = _kind("estimate", default=None)
    backward_savings_vs_mixed: float | None = _kind("estimate", default=None)
    zero_variance_share_of_groups: float | None = _kind("estimate", default=None)
    effective_share_of_generated: float | None = _kind("estimate", default=None)
    seconds: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    train: TrainStats = field(default_factory=TrainStats)
    warmup: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in BASE_COUNTS + OPTIONAL_COUNTS:
            _count("summary", name, getattr(self, name), int(SUMMARY_RANGES.get(name, (0, MAX_INT))[1]))
        for name in SUMMARY_FIGURES:
            low, high = SUMMARY_RANGES[name]
            _number("summary", name, getattr(self, name), optional=False, low=low, high=high)
        for name in ESTIMATES:
            low, high = SUMMARY_RANGES[name]
            _number("summary", name, getattr(self, name), optional=True, low=low, high=high)
        _numbers("summary", "seconds", self.seconds, optional=False, low=0.0, high=MAX_SECONDS)
        # the selectors' own metrics and the warm-up's figures have no common scale: finite only
        _numbers("summary", "metrics", self.metrics, optional=True, low=-math.inf, high=math.inf)
        _numbers("summary", "warmup", self.warmup, optional=True, low=-math.inf, high=math.inf)
        if not isinstance(self.train, TrainStats):
            raise RecordError("summary", f"train must be TrainStats, got {type(self.train).__name__}")

    @classmethod
    def of(cls, accounting: StepAccounting, *, metrics: Mapping[str, Any] | None = None,
           train: TrainStats | Mapping[str, Any] | None = None, warmup: Mapping[str, Any] | None = None) -> StepSummary:
        """From the pipeline's ``StepAccounting`` (its ``to_record()``) and the engine's raw
        figures: every number through ``finite``."""
        figures: dict[str, Any] = {k: v for k, v in accounting.to_record().items() if k != "step"}
        counts = {name: int(figures.pop(name)) for name in BASE_COUNTS + OPTIONAL_COUNTS if name in figures}
        seconds = {str(k): float(v) for k, v in figures.pop("seconds", {}).items()}
        numbers: dict[str, Any] = {name: finite(value) for name, value in figures.items()}
        return cls(**counts, **numbers, seconds=seconds,
                   metrics={str(k): finite(v) for k, v in (metrics or {}).items()},
                   train=train if isinstance(train, TrainStats) else TrainStats.measured(train or {}),
                   warmup={str(k): finite(v) for k, v in (warmup or {}).items()})

    def to_wire(self) -> dict[str, Any]:
        wire = {f.name: getattr(self, f.name) for f in fields(self)}
        wire.update(seconds=dict(self.seconds), metrics=dict(self.metrics), train=self.train.to_wire(),
                    warmup=dict(self.warmup))
        return wire

    @classmethod
    def from_wire(cls, data: Any, version: int = RECORD_VERSION) -> StepSummary:
        data = _object("summary", data)
        missing = [name for name in REQUIRED_SUMMARY if name not in data]
        if missing:
            raise RecordError("summary", f"lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        _unknown("summary", data, known, version)
        values: dict[str, Any] = {}
        for name in BASE_COUNTS + OPTIONAL_COUNTS:
            if name in data:
                values[name] = _read_count(data[name])
        for name in SUMMARY_FIGURES + ESTIMATES:
            if name in data:
                values[name] = _read_number(data[name], version)
        for name in ("seconds", "metrics", "warmup"):
            if name in data:
                values[name] = _read_numbers("summary", name, data[name], version)
        if "train" in data:
            values["train"] = TrainStats.from_wire(data["train"], version)
        return cls(**values)


def _summary_fields(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(StepSummary) if f.metadata.get("kind") == kind)


# The accounting of docs/algorithms.md §7, by kind, read off StepSummary's fields: counts and
# figures every engine sends; counts added later (the savings yardsticks, 0 when absent); and
# estimates that may have no value yet (None).
BASE_COUNTS = _summary_fields("count")
SUMMARY_FIGURES = _summary_fields("figure")
REQUIRED_SUMMARY = BASE_COUNTS + SUMMARY_FIGURES
OPTIONAL_COUNTS = _summary_fields("optional_count")
ESTIMATES = _summary_fields("estimate")


OBSERVATION_FIELDS = ("prompt_key", "group_size", "successes", "pass_rate", "response_entropy", "prompt_entropy",
                      "energy", "response_tokens", "trained", "bucket")


@dataclass(frozen=True, slots=True)
class Observation:
    """One prompt's group this step: its outcomes, entropies and learning-edge bucket."""

    prompt_key: str
    group_size: int
    successes: int
    pass_rate: float
    response_entropy: float | None
    prompt_entropy: float | None
    energy: float | None
    trained: bool
    bucket: str
    response_tokens: int = 0

    def __post_init__(self) -> None:
        # Written out (not a loop over fields): a step holds thousands of these.
        _text("observation", "prompt_key", self.prompt_key, max_length=MAX_KEY, empty=False)
        where = f"observation {self.prompt_key!r}"
        if not _is_int(self.group_size) or not 1 <= self.group_size <= MAX_INT:
            raise RecordError(where, f"group_size must be a whole number in [1, {MAX_INT}], got {self.group_size!r}")
        if not _is_int(self.successes) or not 0 <= self.successes <= self.group_size:
            raise RecordError(where, f"successes must be a whole number in [0, group_size], got {self.successes!r}")
        if not _is_number(self.pass_rate) or not 0 <= self.pass_rate <= 1:
            raise RecordError(where, f"pass_rate must be a finite number in [0, 1], got {self.pass_rate!r}")
        for name in ("response_entropy", "prompt_entropy", "energy"):
            _number(where, name, getattr(self, name), optional=True)
        _count(where, "response_tokens", self.response_tokens)
        if not isinstance(self.trained, bool):
            raise RecordError(where, f"trained must be true or false, got {self.trained!r}")
        _text(where, "bucket", self.bucket, BUCKETS)

    @classmethod
    def measured(cls, values: Mapping[str, Any]) -> Observation:
        """From the pipeline's observation (StepResult.observations): entropies through ``finite``."""
        return cls(prompt_key=values["prompt_key"], group_size=int(values["group_size"]),
                   successes=int(values["successes"]), pass_rate=float(values["pass_rate"]),
                   response_entropy=finite(values.get("response_entropy")),
                   prompt_entropy=finite(values.get("prompt_entropy")), energy=finite(values.get("energy")),
                   trained=bool(values["trained"]), bucket=str(values["bucket"]),
                   response_tokens=int(values.get("response_tokens", 0)))

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OBSERVATION_FIELDS}

    @classmethod
    def from_wire(cls, data: Any, version: int = RECORD_VERSION, index: int = 0) -> Observation:
        where = f"observations[{index}]"
        data = _object(where, data)
        missing = [n for n in OBSERVATION_FIELDS if n not in data and n != "response_tokens"
                   and not (version == 1 and n in ("response_entropy", "prompt_entropy", "energy"))]
        if missing:
            raise RecordError(where, f"lacks {', '.join(missing)}")
        _unknown(where, data, set(OBSERVATION_FIELDS), version)
        return cls(prompt_key=data["prompt_key"], group_size=_read_count(data["group_size"]),
                   successes=_read_count(data["successes"]), pass_rate=data["pass_rate"],
                   response_entropy=_read_number(data.get("response_entropy"), version),
                   prompt_entropy=_read_number(data.get("prompt_entropy"), version),
                   energy=_read_number(data.get("energy"), version), trained=data["trained"],
                   bucket=data["bucket"], response_tokens=_read_count(data.get("response_tokens", 0)))


DECISION_FIELDS = ("step", "prompt_key", "layer", "method", "action", "reason", "scores", "message")


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One selection decision (workers.selection.decisions.Decision) as recorded: the action,
    the reason code, the numbers behind it and the rendered one-line message."""

    step: int
    prompt_key: str
    layer: str
    method: str
    action: str
    reason: str
    scores: Mapping[str, float | None]
    message: str

    def __post_init__(self) -> None:
        _text("decision", "prompt_key", self.prompt_key, max_length=MAX_KEY, empty=False)
        where = f"decision {self.prompt_key!r}"
        _count(where, "step", self.step, MAX_STEP)
        _text(where, "layer", self.layer, LAYERS)
        _text(where, "action", self.action, ACTIONS)
        for name, width in DECISION_WIDTHS.items():
            _text(where, name, getattr(self, name), max_length=width, empty=False)
        _text(where, "message", self.message, max_length=MAX_MESSAGE)
        # scores are the method's own numbers (entropies, draws, counts): finite, any scale
        _numbers(where, "scores", self.scores, optional=True, low=-math.inf, high=math.inf)

    @classmethod
    def of(cls, decision: Any) -> DecisionRecord:
        """From a pipeline ``Decision``: the message rendered, the scores through ``finite``."""
        return cls(step=int(decision.step), prompt_key=decision.prompt_key, layer=str(decision.layer),
                   method=decision.method, action=str(decision.action), reason=decision.reason,
                   scores={str(k): finite(v) for k, v in decision.scores.items()}, message=decision.message)

    def to_wire(self) -> dict[str, Any]:
        return {"step": self.step, "prompt_key": self.prompt_key, "layer": self.layer, "method": self.method,
                "action": self.action, "reason": self.reason, "scores": dict(self.scores), "message": self.message}

    @classmethod
    def from_wire(cls, data: Any, version: int = RECORD_VERSION, index: int = 0) -> DecisionRecord:
        where = f"decisions[{index}]"
        data = _object(where, data)
        missing = [n for n in DECISION_FIELDS if n not in data and n != "scores"]
        if missing:
            raise RecordError(where, f"lacks {', '.join(missing)}")
        _unknown(where, data, set(DECISION_FIELDS), version)
        return cls(step=_read_count(data["step"]), prompt_key=data["prompt_key"], layer=data["layer"],
                   method=data["method"], action=data["action"], reason=data["reason"],
                   scores=_read_numbers(where, "scores", data.get("scores", {}), version), message=data["message"])


# -- a step's rows, held as columns ---------------------------------------------------------------
# A step may carry a million rows (LZE's epoch boundary prunes a whole pool at once): its
# observations and decisions are held column by column, checked a column at a time, written to
# the database from the columns (COPY) and sent on the wire as columns (version 3). Reading a
# row (``batch[i]``, iterating) builds the row's record on demand.
def _types(values: list[Any]) -> set[type]:
    return set(map(type, values))


def _strings_pass(values: list[Any], *, max_length: int, empty: bool, choices: tuple[str, ...] | None = None) -> bool:
    """Whether every value passes ``_text`` (a whole column at once; False: some value may not)."""
    if not values:
        return True
    if _types(values) != {str}:
        return False
    if choices is not None:
        return set(values) <= set(choices)
    lengths = list(map(len, values))
    if max(lengths) > max_length or (not empty and min(lengths) == 0):
        return False
    joined = "".join(values)
    if "\x00" in joined:
        return False
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def _ints_pass(values: list[Any], low: int, high: int) -> bool:
    if not values:
        return True
    if _types(values) != {int}:
        return False
    return bool(low <= min(values) and max(values) <= high)


def _floats_pass(values: list[Any], low: float, high: float, *, optional: bool) -> bool:
    if not values:
        return True
    kinds = _types(values)
    if not kinds <= ({int, float, type(None)} if optional else {int, float}):
        return False
    numbers = [v for v in values if v is not None] if type(None) in kinds else values
    if not numbers:
        return True
    try:
        array = np.asarray(numbers, dtype=np.float64)
    except OverflowError:
        return False
    return bool(np.isfinite(array).all()) and low <= float(array.min()) and float(array.max()) <= high


def _columns(where: str, data: Any, fields: tuple[str, ...], optional: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A wire object of columns: every field a list, all of one length (``optional`` fields may
    be absent: filled with their default)."""
    data = _object(where, data)
    missing = [n for n in fields if n not in data and n not in optional]
    if missing:
        raise RecordError(where, f"lacks column(s) {', '.join(missing)}")
    _unknown(where, data, set(fields), RECORD_VERSION)
    lengths = {name: len(data[name]) for name in fields if isinstance(data.get(name), list)}
    for name in fields:
        if name in data and not isinstance(data[name], list):
            raise RecordError(where, f"column {name} must be a list, got {type(data[name]).__name__}")
    if len(set(lengths.values())) > 1:
        raise RecordError(where, "columns differ in length: " + ", ".join(f"{n} {k}" for n, k in lengths.items()))
    rows = next(iter(lengths.values()), 0)
    return {name: list(data[name]) if name in data else [optional[name]] * rows for name in fields}


class _Rows(Sequence[Any]):
    """A step's rows of one kind as columns (``FIELDS``, each a list of one length)."""

    FIELDS: ClassVar[tuple[str, ...]]
    ROW: ClassVar[type]
    __slots__ = ("_columns", "_length")

    def __init__(self, columns: Mapping[str, Any]) -> None:
        """Columns already checked (``from_rows``, ``read``): no rule runs here."""
        self._columns: dict[str, Any] = {name: columns[name] for name in self.FIELDS}
        self._length = len(columns[self.FIELDS[0]])

    def column(self, name: str) -> list[Any]:
        return cast(list[Any], self._columns[name])

    def __len__(self) -> int:
        return self._length

    def _row(self, index: int) -> Any:
        return self.ROW(**{name: self._columns[name][index] for name in self.FIELDS})

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._row(i) for i in range(*index.indices(self._length)))
        if not -self._length <= index < self._length:
            raise IndexError(index)
        return self._row(index % self._length)

    def __iter__(self) -> Iterator[Any]:
        return (self._row(i) for i in range(self._length))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Rows):
            return type(other) is type(self) and other._columns == self._columns
        if isinstance(other, (tuple, list)):
            return len(other) == self._length and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._length} rows)"

    def _first_error(self) -> None:
        """Build the rows one by one: the first that breaks a rule raises its own RecordError."""
        for row in self:
            del row


class ObservationRows(_Rows):
    FIELDS = OBSERVATION_FIELDS
    ROW = Observation

    @classmethod
    def from_rows(cls, rows: Iterable[Observation]) -> ObservationRows:
        rows = tuple(rows)
        return cls({name: [getattr(r, name) for r in rows] for name in OBSERVATION_FIELDS})

    @classmethod
    def read(cls, columns: Mapping[str, Any]) -> ObservationRows:
        """Columns checked against ``Observation``'s rules, a column at a time."""
        batch = cls(columns)
        c = batch._columns
        passes = (
            _strings_pass(c["prompt_key"], max_length=MAX_KEY, empty=False)
            and _ints_pass(c["group_size"], 1, MAX_INT) and _ints_pass(c["successes"], 0, MAX_INT)
            and all(s <= g for s, g in zip(c["successes"], c["group_size"], strict=True))
            and _floats_pass(c["pass_rate"], 0.0, 1.0, optional=False)
            and all(_floats_pass(c[n], -MAX_MAGNITUDE, MAX_MAGNITUDE, optional=True)
                    for n in ("response_entropy", "prompt_entropy", "energy"))
            and _ints_pass(c["response_tokens"], 0, MAX_INT)
            and (not c["trained"] or _types(c["trained"]) == {bool})
            and _strings_pass(c["bucket"], max_length=0, empty=True, choices=BUCKETS)
        )
        if not passes:
            batch._first_error()
        return batch

    @classmethod
    def from_wire(cls, data: Any) -> ObservationRows:
        return cls.read(_columns("observations", data, OBSERVATION_FIELDS, {"response_tokens": 0}))

    def to_wire(self) -> dict[str, list[Any]]:
        return dict(self._columns)


DECISION_WIRE_COLUMNS = ("prompt_key", "layer", "method", "action", "reason", "message")  # on the wire, beside scores


class DecisionRows(_Rows):
    """Decisions as columns; ``scores`` is one column per score name (``None`` where a row has
    no such score, or did not measure it: both are left out of the row's scores)."""

    FIELDS = DECISION_FIELDS
    ROW = DecisionRecord

    def __init__(self, columns: Mapping[str, Any]) -> None:
        super().__init__(columns)
        # a score no row has is no column (so rows -> columns -> rows -> columns is stable)
        self._columns["scores"] = {name: values for name, values in dict(columns["scores"]).items()
                                   if not isinstance(values, list) or any(v is not None for v in values)}

    def _row(self, index: int) -> DecisionRecord:
        c = self._columns
        scores = {name: values[index] for name, values in c["scores"].items() if values[index] is not None}
        return DecisionRecord(step=c["step"][index], prompt_key=c["prompt_key"][index], layer=c["layer"][index],
                              method=c["method"][index], action=c["action"][index], reason=c["reason"][index],
                              scores=scores, message=c["message"][index])

    def score_columns(self) -> dict[str, list[Any]]:
        """Score name -> one value per row (None: the row has no such score, or did not measure it)."""
        return cast(dict[str, list[Any]], self._columns["scores"])

    @classmethod
    def from_rows(cls, rows: Iterable[DecisionRecord]) -> DecisionRows:
        rows = tuple(rows)
        columns: dict[str, Any] = {name: [getattr(r, name) for r in rows] for name in DECISION_FIELDS
                                   if name != "scores"}
        names = dict.fromkeys(name for r in rows for name in r.scores)
        columns["scores"] = {name: [r.scores.get(name) for r in rows] for name in names}
        return cls(columns)

    @classmethod
    def read(cls, columns: Mapping[str, Any]) -> DecisionRows:
        batch = cls(columns)
        c = batch._columns
        scores = c["scores"]
        passes = (
            _strings_pass(c["prompt_key"], max_length=MAX_KEY, empty=False)
            and _ints_pass(c["step"], 0, MAX_STEP)
            and _strings_pass(c["layer"], max_length=0, choices=LAYERS, empty=True)
            and _strings_pass(c["action"], max_length=0, choices=ACTIONS, empty=True)
            and all(_strings_pass(c[n], max_length=w, empty=False) for n, w in DECISION_WIDTHS.items())
            and _strings_pass(c["message"], max_length=MAX_MESSAGE, empty=True)
            and len(scores) <= MAX_ENTRIES and _strings_pass(list(scores), max_length=MAX_NAME, empty=True)
            and all(isinstance(v, list) and len(v) == batch._length
                    and _floats_pass(v, -math.inf, math.inf, optional=True) for v in scores.values())
        )
        if not passes:
            for name, values in scores.items():
                if not isinstance(values, list) or len(values) != batch._length:
                    raise RecordError("decisions", f"scores column {name!r} must be a list of {batch._length} "
                                                   "numbers or nulls")
            batch._first_error()
        return batch

    @classmethod
    def from_wire(cls, data: Any, step: int) -> DecisionRows:
        data = dict(_object("decisions", data))
        scores = _object("decisions.scores", data.pop("scores", {}))
        columns: dict[str, Any] = _columns("decisions", data, DECISION_WIRE_COLUMNS, {})
        columns["step"] = [step] * len(columns["prompt_key"])
        columns["scores"] = dict(scores)
        return cls.read(columns)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {name: self._columns[name] for name in DECISION_WIRE_COLUMNS}
        wire["scores"] = dict(self._columns["scores"])
        return wire


def _version(data: Mapping[str, Any], what: str) -> int:
    version = data.get("version", 1)  # unversioned: before versions were written
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise RecordError("version", f"{what} version {version!r} is not readable here: this side reads versions "
                                     f"{READABLE_VERSIONS[0]} to {RECORD_VERSION} (current {RECORD_VERSION}); "
                                     f"update the control plane or send version {RECORD_VERSION}")
    return int(version)


def decision_key(decision: DecisionRecord) -> tuple[str, str, str, str]:
    """What makes a decision one act: the prompt, the method, the action and the reason code.
    HIVE keeps a prompt at stage 1 and again at stage 2 (two reasons, two acts); a prompt
    deferred and drawn again in the same step repeats an act, which counts once."""
    return decision.prompt_key, decision.method, decision.action, decision.reason


def last_of_each(decisions: Iterable[DecisionRecord]) -> tuple[DecisionRecord, ...]:
    """The decisions with each act (``decision_key``) once: the last of its repeats, in the
    order of those last ones."""
    last: dict[tuple[str, str, str, str], DecisionRecord] = {}
    for d in decisions:
        last.pop(decision_key(d), None)
        last[decision_key(d)] = d
    return tuple(last.values())


STEP_ENVELOPE = ("event", "attempt")  # transport fields beside a record on the wire (the sinks add them)


def read_attempt(value: Any) -> int | None:
    """The attempt number an event names (``attempt`` beside the record), or None when absent."""
    if value is not None and (not _is_int(value) or not 1 <= value <= MAX_ATTEMPT):
        raise RecordError("attempt", f"attempt must be a whole number in [1, {MAX_ATTEMPT}], got {value!r}")
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One optimizer step, as every engine reports it and every sink takes it."""

    EVENT: ClassVar[str] = "step"
    VERSION: ClassVar[int] = RECORD_VERSION

    step: int
    epoch: int
    summary: StepSummary
    # Rows given as a tuple of Observation / DecisionRecord are held as columns (ObservationRows,
    # DecisionRows): indexing and iterating still give the row records.
    observations: ObservationRows | tuple[Observation, ...] = ()
    decisions: DecisionRows | tuple[DecisionRecord, ...] = ()
    alerts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _count("record", "step", self.step, MAX_STEP)
        _count("record", "epoch", self.epoch, MAX_STEP)
        if not isinstance(self.summary, StepSummary):
            raise RecordError("summary", f"must be a StepSummary, got {type(self.summary).__name__}")
        for name, kind, rows in (("observations", Observation, ObservationRows),
                                 ("decisions", DecisionRecord, DecisionRows)):
            parts = getattr(self, name)
            if isinstance(parts, tuple) and all(isinstance(p, kind) for p in parts):
                object.__setattr__(self, name, rows.from_rows(parts))
            elif not isinstance(parts, rows):
                raise RecordError(name, f"must be a tuple of {kind.__name__} (or {rows.__name__})")
        if not isinstance(self.alerts, tuple) or not all(isinstance(a, str) for a in self.alerts):
            raise RecordError("alerts", "must be a tuple of str")
        if len(self.alerts) > MAX_ALERTS:
            raise RecordError("alerts", f"must be at most {MAX_ALERTS}, got {len(self.alerts)}")
        for i, alert in enumerate(self.alerts):
            _text("alerts", f"alerts[{i}]", alert, max_length=MAX_MESSAGE)
        # One observation per prompt and one decision per act in a step (docs/api.md): both
        # engines roll a prompt out at most once a step, so a repeat is a malformed record.
        observed = cast(ObservationRows, self.observations).column("prompt_key")
        if len(set(observed)) < len(observed):
            key, times = Counter(observed).most_common(1)[0]
            raise RecordError("observations", f"prompt {key!r} is observed {times} times in step {self.step}: "
                                              "send one observation per prompt and step")
        d = cast(DecisionRows, self.decisions)
        if d and set(d.column("step")) != {self.step}:
            wrong = next(i for i, step in enumerate(d.column("step")) if step != self.step)
            raise RecordError(f"decision {d.column('prompt_key')[wrong]!r}",
                              f"step {d.column('step')[wrong]} is not the record's step {self.step}")
        acts = list(zip(*(d.column(n) for n in ("prompt_key", "method", "action", "reason")), strict=True))
        if len(set(acts)) < len(acts):
            (key, method, action, reason), times = Counter(acts).most_common(1)[0]
            raise RecordError("decisions", f"prompt {key!r} has the same decision ({method} {action}, {reason}) "
                                           f"{times} times in step {self.step}: send each act once (the last one)")

    @classmethod
    def from_result(cls, result: StepResult, *, train: TrainStats | Mapping[str, Any],
                    warmup: Mapping[str, Any] | None = None) -> StepRecord:
        """The record of a pipeline step (workers.selection.pipeline.StepResult) and the
        engine's optimizer figures: what both engines send. Their numbers (NaN, numpy) go
        through ``finite`` here, and nowhere else."""
        summary = StepSummary.of(result.accounting, metrics=result.metrics, train=train, warmup=warmup)
        # One observation per prompt: the engines' loaders never hand a prompt out twice in a
        # step; a pipeline fed by one that does (a test double) keeps the prompt's last group.
        observations = {o["prompt_key"]: o for o in result.observations}
        return cls(step=int(result.step), epoch=int(result.epoch), summary=summary,
                   observations=tuple(Observation.measured(o) for o in observations.values()),
                   decisions=last_of_each(DecisionRecord.of(d) for d in result.decisions),
                   alerts=tuple(str(a) for a in result.alerts))

    def to_wire(self, version: int = RECORD_VERSION) -> dict[str, Any]:
        """The JSON-ready form (no NaN: ``json.dumps(..., allow_nan=False)`` takes it): columns, or
        with ``version=2`` lists of row objects (what a control plane before version 3 reads)."""
        wire = {"version": version, "step": self.step, "epoch": self.epoch, "summary": self.summary.to_wire(),
                "alerts": list(self.alerts)}
        if version >= 3:
            return {**wire, "observations": self.rows("observations").to_wire(),
                    "decisions": self.rows("decisions").to_wire()}
        if version != 2:
            raise ValueError(f"writes versions 2 and {RECORD_VERSION}, not {version}")
        return {**wire, "observations": [o.to_wire() for o in self.observations],
                "decisions": [d.to_wire() for d in self.decisions]}

    def rows(self, name: str) -> Any:
        """The ``observations`` or ``decisions`` as columns (``ObservationRows``, ``DecisionRows``)."""
        return getattr(self, name)

    @classmethod
    def from_wire(cls, data: Any) -> StepRecord:
        """Read and check a wire record (version 1 or 2); raises ``RecordError`` saying what is wrong."""
        data = _object("record", data)
        version = _version(data, "step record")
        if "step" not in data or "summary" not in data:
            raise RecordError("record", "a step record needs step and summary "
                                        f"(lacks {', '.join(n for n in ('step', 'summary') if n not in data)})")
        known = {"version", "step", "epoch", "summary", "observations", "decisions", "alerts", *STEP_ENVELOPE}
        _unknown("record", data, known, version)
        summary = dict(_object("summary", data["summary"]))
        if version == 1:
            summary.pop("step", None)
        alerts = data.get("alerts", [])
        if not isinstance(alerts, list) or not all(isinstance(a, str) for a in alerts):
            raise RecordError("alerts", "must be a list of strings")
        step = _read_count(data["step"])
        read_summary = StepSummary.from_wire(summary, version)
        observations: ObservationRows | tuple[Observation, ...]
        decisions: DecisionRows | tuple[DecisionRecord, ...]
        if version >= 3:  # columns
            observations = ObservationRows.from_wire(data.get("observations", {}))
            decisions = DecisionRows.from_wire(data.get("decisions", {}), step if _is_int(step) else 0)
        else:  # a list of rows
            listed = {name: data.get(name, []) for name in ("observations", "decisions")}
            for name, value in listed.items():
                if not isinstance(value, list):
                    raise RecordError(name, f"must be a list, got {type(value).__name__}")
            read = tuple(DecisionRecord.from_wire(d, version, i) for i, d in enumerate(listed["decisions"]))
            observations = tuple(Observation.from_wire(o, version, i) for i, o in enumerate(listed["observations"]))
            decisions = last_of_each(read) if version == 1 else read  # engines before the rule repeated
        return cls(step=step, epoch=_read_count(data.get("epoch", 0)), summary=read_summary,
                   observations=observations, decisions=decisions, alerts=tuple(alerts))


# -- the other events --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """Pass@1 and Pass@k on the held-out prompts at ``step`` (before that step trains)."""

    EVENT: ClassVar[str] = "evaluation"

    step: int
    k: int
    pass_at_1: float
    pass_at_k: float
    prompts: int
    by_difficulty: Mapping[str, Any] = field(default_factory=dict)  # tag -> figures (JSON, finite or null)
    extra: Mapping[str, Any] = field(default_factory=dict)  # what else the engine reports (seconds, pass_at)

    def __post_init__(self) -> None:
        _count("evaluation", "step", self.step, MAX_STEP)
        if not _is_int(self.k) or not 1 <= self.k <= MAX_INT:
            raise RecordError("evaluation", f"k must be a whole number in [1, {MAX_INT}], got {self.k!r}")
        _rate("evaluation", "pass_at_1", self.pass_at_1, optional=False)
        _rate("evaluation", "pass_at_k", self.pass_at_k, optional=False)
        _count("evaluation", "prompts", self.prompts)
        if not isinstance(self.by_difficulty, Mapping):
            raise RecordError("evaluation", "by_difficulty must be an object")
        _json("evaluation", "by_difficulty", self.by_difficulty)
        _json("evaluation", "extra", self.extra)

    @classmethod
    def measured(cls, values: Mapping[str, Any]) -> EvaluationRecord:
        """From an engine's evaluation dict: open parts through ``wire_json`` (NaN -> None)."""
        values = wire_json(values)
        named = {"step", "k", "pass_at_1", "pass_at_k", "prompts", "by_difficulty"}
        return cls(**{k: v for k, v in values.items() if k in named},
                   extra={k: v for k, v in values.items() if k not in named})

    def to_wire(self) -> dict[str, Any]:
        return {**self.extra, "step": self.step, "k": self.k, "pass_at_1": self.pass_at_1,
                "pass_at_k": self.pass_at_k, "prompts": self.prompts, "by_difficulty": dict(self.by_difficulty)}

    @classmethod
    def from_wire(cls, data: Any) -> EvaluationRecord:
        data = _object("evaluation", data)
        missing = [n for n in ("step", "k", "pass_at_1", "pass_at_k", "prompts") if n not in data]
        if missing:
            raise RecordError("evaluation", f"lacks {', '.join(missing)}")
        return cls.measured({k: v for k, v in data.items() if k not in STEP_ENVELOPE})


@dataclass(frozen=True, slots=True)
class RunStarted:
    EVENT: ClassVar[str] = "run_started"

    resumed_from_step: int | None = None

    def __post_init__(self) -> None:
        if self.resumed_from_step is not None:
            _count("run_started", "resumed_from_step", self.resumed_from_step, MAX_STEP)

    @classmethod
    def from_wire(cls, data: Any) -> RunStarted:
        return cls(resumed_from_step=_object("run_started", data).get("resumed_from_step"))


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    EVENT: ClassVar[str] = "checkpoint"

    step: int
    path: str = ""

    def __post_init__(self) -> None:
        _count("checkpoint", "step", self.step, MAX_STEP)
        _text("checkpoint", "path", self.path, max_length=MAX_PATH)

    @classmethod
    def from_wire(cls, data: Any) -> CheckpointSaved:
        data = _object("checkpoint", data)
        if "step" not in data:
            raise RecordError("checkpoint", "lacks step")
        return cls(step=data["step"], path=data.get("path", ""))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    EVENT: ClassVar[str] = "heartbeat"

    phase: str
    detail: str
    # Device-seconds spent since the previous heartbeat outside any step: the warm-up's, which
    # no step record reports. Booked to the run's warm-up usage; only with phase "warmup".
    device_seconds: float | None = None
    # How far the warm-up is: supervised step ``warmup_step`` of ``warmup_steps`` (the run page's
    # warm-up bar). Both or neither, only with phase "warmup". Named apart from a step record's
    # ``step``: an RL step number this is not.
    warmup_step: int | None = None
    warmup_steps: int | None = None

    WARMUP: ClassVar[str] = "warmup"

    def __post_init__(self) -> None:
        _text("heartbeat", "phase", self.phase, max_length=MAX_PHASE, empty=False)
        _text("heartbeat", "detail", self.detail, max_length=MAX_DETAIL)
        _number("heartbeat", "device_seconds", self.device_seconds, optional=True, low=0.0, high=MAX_SECONDS)
        if self.device_seconds is not None and self.phase != self.WARMUP:
            raise RecordError("heartbeat", f"device_seconds is booked for the warm-up only: send it with phase "
                                           f"{self.WARMUP!r} (steps report their own), not {self.phase!r}")
        if (self.warmup_step is None) != (self.warmup_steps is None):
            raise RecordError("heartbeat", "warmup_step and warmup_steps go together: send both (the step the "
                                           "warm-up reached and its total) or neither")
        if self.warmup_step is None or self.warmup_steps is None:
            return
        if self.phase != self.WARMUP:
            raise RecordError("heartbeat", f"warmup_step and warmup_steps are the warm-up's progress: send them "
                                           f"with phase {self.WARMUP!r}, not {self.phase!r}")
        if not _is_int(self.warmup_steps) or not 1 <= self.warmup_steps <= MAX_STEP:
            raise RecordError("heartbeat", f"warmup_steps must be a whole number in [1, {MAX_STEP}], "
                                           f"got {self.warmup_steps!r}")
        _count("heartbeat", "warmup_step", self.warmup_step, self.warmup_steps)

    @classmethod
    def from_wire(cls, data: Any) -> Heartbeat:
        data = _object("heartbeat", data)
        missing = [n for n in ("phase", "detail") if n not in data]
        if missing:
            raise RecordError("heartbeat", f"lacks {', '.join(missing)}")
        return cls(phase=data["phase"], detail=data["detail"], device_seconds=data.get("device_seconds"),
                   warmup_step=data.get("warmup_step"), warmup_steps=data.get("warmup_steps"))


@dataclass(frozen=True, slots=True)
class RunFinished:
    EVENT: ClassVar[str] = "run_finished"

    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        _text("run_finished", "status", self.status, FINISHED_STATUSES)
        _text("run_finished", "reason", self.reason, max_length=MAX_REASON)

    @classmethod
    def from_wire(cls, data: Any) -> RunFinished:
        data = _object("run_finished", data)
        if "status" not in data:
            raise RecordError("run_finished", "lacks status")
        return cls(status=data["status"], reason=data.get("reason", ""))

