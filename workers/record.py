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
``"NaN"``, ``summary.step`` and extra summary keys tolerated); 2 (``RECORD_VERSION``) is
this one. A version above ``RECORD_VERSION`` is refused, naming both versions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from workers.selection.accounting import StepAccounting
from workers.selection.decisions import Action, Layer
from workers.selection.ledger import Bucket
from workers.selection.pipeline import StepResult

RECORD_VERSION = 2
READABLE_VERSIONS = (1, 2)



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


# -- rules shared by construction and reading ----------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


def _count(where: str, name: str, value: Any) -> None:
    if not _is_int(value) or value < 0:
        raise RecordError(where, f"{name} must be a whole number >= 0, got {value!r}")


def _number(where: str, name: str, value: Any, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not _is_number(value):
        kind = "a finite number or null" if optional else "a finite number"
        raise RecordError(where, f"{name} must be {kind}, got {value!r}")


def _text(where: str, name: str, value: Any, choices: tuple[str, ...] | None = None) -> None:
    if not isinstance(value, str):
        raise RecordError(where, f"{name} must be a string, got {value!r}")
    if choices is not None and value not in choices:
        raise RecordError(where, f"{name} {value!r} is not one of {', '.join(choices)}")


def _numbers(where: str, name: str, value: Any, *, optional: bool) -> None:
    if not isinstance(value, Mapping):
        raise RecordError(where, f"{name} must be an object of numbers, got {type(value).__name__}")
    for key, number in value.items():
        if not isinstance(key, str):
            raise RecordError(where, f"{name} keys must be strings, got {key!r}")
        _number(where, f"{name}[{key!r}]", number, optional=optional)


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
            _number("summary.train", name, getattr(self, name), optional=True)

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
            _count("summary", name, getattr(self, name))
        for name in SUMMARY_FIGURES:
            _number("summary", name, getattr(self, name), optional=False)
        for name in ESTIMATES:
            _number("summary", name, getattr(self, name), optional=True)
        _numbers("summary", "seconds", self.seconds, optional=False)
        _numbers("summary", "metrics", self.metrics, optional=True)
        _numbers("summary", "warmup", self.warmup, optional=True)
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
        where = f"observation {self.prompt_key!r}"
        _text("observation", "prompt_key", self.prompt_key)
        if not _is_int(self.group_size) or self.group_size < 1:
            raise RecordError(where, f"group_size must be a whole number >= 1, got {self.group_size!r}")
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
        where = f"decision {self.prompt_key!r}"
        _count(where, "step", self.step)
        _text("decision", "prompt_key", self.prompt_key)
        _text(where, "layer", self.layer, LAYERS)
        _text(where, "action", self.action, ACTIONS)
        for name in ("method", "reason", "message"):
            _text(where, name, getattr(self, name))
        _numbers(where, "scores", self.scores, optional=True)

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


def _version(data: Mapping[str, Any], what: str) -> int:
    version = data.get("version", 1)  # unversioned: before versions were written
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise RecordError("version", f"{what} version {version!r} is not readable here: this side reads versions "
                                     f"{READABLE_VERSIONS[0]} to {RECORD_VERSION} (current {RECORD_VERSION}); "
                                     f"update the control plane or send version {RECORD_VERSION}")
    return int(version)


STEP_ENVELOPE = ("event", "attempt")  # transport fields beside a record on the wire (the sinks add them)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One optimizer step, as every engine reports it and every sink takes it."""

    EVENT: ClassVar[str] = "step"
    VERSION: ClassVar[int] = RECORD_VERSION

    step: int
    epoch: int
    summary: StepSummary
    observations: tuple[Observation, ...] = ()
    decisions: tuple[DecisionRecord, ...] = ()
    alerts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _count("record", "step", self.step)
        _count("record", "epoch", self.epoch)
        if not isinstance(self.summary, StepSummary):
            raise RecordError("summary", f"must be a StepSummary, got {type(self.summary).__name__}")
        for name, kind in (("observations", Observation), ("decisions", DecisionRecord), ("alerts", str)):
            parts = getattr(self, name)
            if not isinstance(parts, tuple) or not all(isinstance(p, kind) for p in parts):
                raise RecordError(name, f"must be a tuple of {kind.__name__}")

    @classmethod
    def from_result(cls, result: StepResult, *, train: TrainStats | Mapping[str, Any],
                    warmup: Mapping[str, Any] | None = None) -> StepRecord:
        """The record of a pipeline step (workers.selection.pipeline.StepResult) and the
        engine's optimizer figures: what both engines send. Their numbers (NaN, numpy) go
        through ``finite`` here, and nowhere else."""
        summary = StepSummary.of(result.accounting, metrics=result.metrics, train=train, warmup=warmup)
        return cls(step=int(result.step), epoch=int(result.epoch), summary=summary,
                   observations=tuple(Observation.measured(o) for o in result.observations),
                   decisions=tuple(DecisionRecord.of(d) for d in result.decisions),
                   alerts=tuple(str(a) for a in result.alerts))

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form (no NaN: ``json.dumps(..., allow_nan=False)`` takes it)."""
        return {"version": RECORD_VERSION, "step": self.step, "epoch": self.epoch, "summary": self.summary.to_wire(),
                "observations": [o.to_wire() for o in self.observations],
                "decisions": [d.to_wire() for d in self.decisions], "alerts": list(self.alerts)}

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
        observations = data.get("observations", [])
        decisions = data.get("decisions", [])
        alerts = data.get("alerts", [])
        for name, value in (("observations", observations), ("decisions", decisions), ("alerts", alerts)):
            if not isinstance(value, list):
                raise RecordError(name, f"must be a list, got {type(value).__name__}")
        if not all(isinstance(a, str) for a in alerts):
            raise RecordError("alerts", "must be a list of strings")
        return cls(step=_read_count(data["step"]), epoch=_read_count(data.get("epoch", 0)),
                   summary=StepSummary.from_wire(summary, version),
                   observations=tuple(Observation.from_wire(o, version, i) for i, o in enumerate(observations)),
                   decisions=tuple(DecisionRecord.from_wire(d, version, i) for i, d in enumerate(decisions)),
                   alerts=tuple(alerts))


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
        _count("evaluation", "step", self.step)
        if not _is_int(self.k) or self.k < 1:
            raise RecordError("evaluation", f"k must be a whole number >= 1, got {self.k!r}")
        _number("evaluation", "pass_at_1", self.pass_at_1, optional=False)
        _number("evaluation", "pass_at_k", self.pass_at_k, optional=False)
        _count("evaluation", "prompts", self.prompts)
        if not isinstance(self.by_difficulty, Mapping):
            raise RecordError("evaluation", "by_difficulty must be an object")

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
            _count("run_started", "resumed_from_step", self.resumed_from_step)

    @classmethod
    def from_wire(cls, data: Any) -> RunStarted:
        return cls(resumed_from_step=_object("run_started", data).get("resumed_from_step"))


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    EVENT: ClassVar[str] = "checkpoint"

    step: int
    path: str = ""

    def __post_init__(self) -> None:
        _count("checkpoint", "step", self.step)
        _text("checkpoint", "path", self.path)

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

    def __post_init__(self) -> None:
        _text("heartbeat", "phase", self.phase)
        _text("heartbeat", "detail", self.detail)
        if not self.phase or len(self.phase) > 64 or len(self.detail) > 500:
            raise RecordError("heartbeat", "phase must be 1 to 64 characters and detail at most 500")

    @classmethod
    def from_wire(cls, data: Any) -> Heartbeat:
        data = _object("heartbeat", data)
        missing = [n for n in ("phase", "detail") if n not in data]
        if missing:
            raise RecordError("heartbeat", f"lacks {', '.join(missing)}")
        return cls(phase=data["phase"], detail=data["detail"])


@dataclass(frozen=True, slots=True)
class RunFinished:
    EVENT: ClassVar[str] = "run_finished"

    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        _text("run_finished", "status", self.status, FINISHED_STATUSES)
        _text("run_finished", "reason", self.reason)

    @classmethod
    def from_wire(cls, data: Any) -> RunFinished:
        data = _object("run_finished", data)
        if "status" not in data:
            raise RecordError("run_finished", "lacks status")
        return cls(status=data["status"], reason=data.get("reason", ""))

