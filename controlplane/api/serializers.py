"""Input validation and output shapes of the JSON API. No business logic here: the
services decide, these only check types and render."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from controlplane.datasets.models import Dataset
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.selectors import SAVINGS, RunDetail
from controlplane.runs.tags import TAG_MAX, TAGS_MAX, tags_clean
from controlplane.telemetry.models import (
    Bucket,
    Evaluation,
    PromptState,
    SelectionDecision,
    StepSummary,
)
from controlplane.telemetry.services import EVENT_ROUTES, event_read
from workers.engines.config import ConfigError
from workers.record import RecordError
from workers.selection.accounting import YARDSTICKS
from workers.selection.decisions import Action


def saving_help(name: str, scope: str = "") -> str:
    """A saving's help text: its formula (``SAVINGS``) and, in words, what it is measured
    against (``YARDSTICKS``)."""
    yardstick, formula = SAVINGS[name]
    return f"{formula}{scope}. Baseline: {YARDSTICKS[yardstick]}"

# -- numbers within their columns ------------------------------------------------------------

STEP_MAX = 2**31 - 1  # a step column (PositiveIntegerField)
ID_MAX = 2**63 - 1  # an id column (bigint)


class WholeNumberField(serializers.IntegerField):
    """A whole number and nothing else: a JSON integer, or digits in a query string. DRF's
    IntegerField takes "5." and 5.0 as 5; a float cursor or id is refused here, and so is a
    number past the column it meets (``max_value``), before the database sees it."""

    default_error_messages = {
        "invalid": "A whole number is required (digits only, no decimal point or exponent).",
        "out_of_range": "The number is out of range: {min_value} to {max_value}.",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, str)):
            self.fail("invalid")
        if isinstance(data, str):
            text = data.strip()
            digits = text[1:] if text[:1] in "+-" else text
            if not (digits.isascii() and digits.isdigit()):
                self.fail("invalid")
            if len(digits) > 20:  # past any column, and int() of thousands of digits is slow
                self.fail("out_of_range", min_value=self.min_value, max_value=self.max_value)
            data = int(text)
        return super().to_internal_value(data)


def IdField(**kwargs) -> WholeNumberField:
    return WholeNumberField(min_value=1, max_value=ID_MAX, **kwargs)


def StepField(**kwargs) -> WholeNumberField:
    return WholeNumberField(max_value=STEP_MAX, **kwargs)


# -- datasets ------------------------------------------------------------------------------


class DatasetSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)

    class Meta:
        model = Dataset
        fields = ("id", "team", "name", "prompt_count", "content_hash", "source_filename", "created_at")


class DatasetUploadSerializer(serializers.Serializer):
    team = serializers.SlugField(help_text="the team's slug")
    name = serializers.CharField(max_length=200, help_text="unique within the team")
    file = serializers.FileField(help_text="JSONL, CSV or Parquet in verl's format")

    def validate_file(self, file):
        # Checked before anything reads the upload: an oversize file never lands in memory.
        limit = settings.EDGEPLANE_UPLOAD_MAX_BYTES
        if file.size > limit:
            raise serializers.ValidationError(f"file is {file.size} bytes, over the limit of {limit} bytes")
        return file


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="line (JSONL) or data row (CSV, Parquet); 0 = the whole file")
    field = serializers.CharField()
    message = serializers.CharField()


class RowErrorsSerializer(serializers.Serializer):
    errors = RowErrorSerializer(many=True)


def row_errors(errors: dict) -> list[dict]:
    """A serializer's {field: [messages]} as the upload's [{row, field, message}]."""
    return [{"row": 0, "field": name, "message": str(message)}
            for name, messages in errors.items() for message in messages]


# -- runs ----------------------------------------------------------------------------------------


def _config_kinds() -> dict[tuple[str, ...], type]:
    """The type of each run config setting by its path: ("lr",) or ("selectors", "hora", "n0")."""
    from workers.engines.config import RunConfig
    from workers.selection.registry import REGISTRY

    kinds: dict[tuple[str, ...], type] = {(d["name"],): type(d["default"]) for d in RunConfig.describe()}
    for method, cls in REGISTRY.items():
        kinds.update({("selectors", method, p["name"]): type(p["default"]) for p in cls.Params.describe()})
    return kinds


# Settings that name a path on the worker: a name no file system takes is refused here, as the
# check for the folder would fail with "File name too long" (a 500) rather than say so.
PATH_SETTINGS = {("model",)}
NAME_MAX_BYTES, PATH_MAX_BYTES = 255, 4096


def path_problem(text: str) -> str | None:
    parts = text.encode("utf-8", "surrogatepass")
    if len(parts) > PATH_MAX_BYTES or any(len(p) > NAME_MAX_BYTES for p in parts.split(b"/")):
        return (f"is not a path a file system takes ({NAME_MAX_BYTES} bytes a folder name at most, "
                f"{PATH_MAX_BYTES} in all); name the model's folder")
    return None


KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _kind_problem(value: Any, kind: type) -> str | None:
    """A method parameter's value against its default's type (MethodParams takes values as
    they come: a list where a number belongs failed its range check with a TypeError)."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    else:
        return None
    return None if ok else f"must be {KIND_WORDS[kind]}, got {value!r:.60}"


def config_problems(config: Any) -> dict[str, list[str]]:
    """What no run config setting can hold, by the setting's dotted name: a whole number past
    64 bits, a non-finite number (also spelt as text, "Infinity", for a number setting), a NUL
    character, a path no file system takes, a method's parameters that are not a mapping or a
    parameter of the wrong type. RunConfig then checks each setting's own type and range."""
    kinds = _config_kinds()
    problems: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        problems.setdefault(name, []).append(message)

    selectors = config.get("selectors") if isinstance(config, dict) else None
    if isinstance(selectors, dict):
        for method, params in selectors.items():
            if params is not None and not isinstance(params, dict):
                add(f"selectors.{method}", f"must be a mapping of {method}'s parameters, got {params!r:.60}")
            for param, value in (params or {}).items() if isinstance(params, dict) else ():
                kind = kinds.get(("selectors", str(method), str(param)))
                problem = _kind_problem(value, kind) if kind is not None else None
                if problem:
                    add(f"selectors.{method}.{param}", problem)
    stack: list[tuple[tuple[str, ...], Any]] = [((), config)]
    while stack:
        where, value = stack.pop()
        name = ".".join(where) or "config"
        if isinstance(value, dict):
            stack.extend((where + (str(k),), v) for k, v in value.items())
            if any("\x00" in str(k) for k in value):
                add(name, "a name holds a NUL character")
        elif isinstance(value, list):
            stack.extend((where + (str(i),), v) for i, v in enumerate(value))
        elif isinstance(value, bool) or value is None or name in problems:
            continue
        elif isinstance(value, int) and not -(2**63) <= value <= 2**63 - 1:
            add(name, f"{value} is past the range of a 64-bit whole number")
        elif isinstance(value, float) and not math.isfinite(value):
            add(name, f"must be a finite number, got {value!r}")
        elif isinstance(value, str):
            if "\x00" in value:
                add(name, "holds a NUL character")
            elif where in PATH_SETTINGS and path_problem(value):
                add(name, path_problem(value))
            elif kinds.get(where) is float:
                try:
                    number = float(value)
                except ValueError:
                    continue  # RunConfig says "must be a number"
                if not math.isfinite(number):
                    add(name, f"must be a finite number, got {value!r}")
    return problems


class RunCreateSerializer(serializers.Serializer):
    team = serializers.SlugField(help_text="the team's slug")
    dataset = IdField(help_text="id of one of the team's datasets")
    name = serializers.CharField(max_length=200)
    config = serializers.DictField(
        required=False, default=dict,
        help_text="RunConfig fields (workers/engines/config.py); the dataset comes from `dataset`")
    baseline = IdField(
        required=False, allow_null=True, default=None,
        help_text="id of a run of the same team to compare this run against (the cost to reach its final "
                  "held-out Pass@1)")
    tags = serializers.JSONField(
        required=False, default=list,
        help_text=f"short labels, e.g. [\"ablation\", \"hive\"]: each 1-{TAG_MAX} letters, digits, -, _ or . "
                  f"(stored lowercase), at most {TAGS_MAX}")

    def validate(self, attrs: dict) -> dict:
        """What no setting can hold is refused here, by the setting's name (the shape of
        RunConfig's own errors: ``{"selectors.hora.n0": [...]}``), before RunConfig reads it.
        ``baseline`` becomes the Run, which must belong to the named team (run_create
        checks again; here the error lands on the field)."""
        problems = config_problems(attrs.get("config") or {})
        try:
            attrs["tags"] = tags_clean(attrs.get("tags"))
        except ConfigError as exc:
            problems = {**problems, **exc.as_dict()}
        if problems:
            raise serializers.ValidationError(problems)
        baseline = attrs.get("baseline")
        if baseline is not None:
            run = Run.objects.filter(pk=baseline, team__slug=attrs["team"]).first()
            if run is None:
                raise serializers.ValidationError({"baseline": [f"no run {baseline} in team {attrs['team']}"]})
            attrs["baseline"] = run
        return attrs


class RunUpdateSerializer(serializers.Serializer):
    tags = serializers.JSONField(
        help_text=f"the run's tags, replacing the ones it has: each 1-{TAG_MAX} letters, digits, -, _ or . "
                  f"(stored lowercase), at most {TAGS_MAX}; [] clears them")

    def validate_tags(self, value):
        try:
            return tags_clean(value)
        except ConfigError as exc:
            raise serializers.ValidationError(exc.as_dict()["tags"]) from exc


class RunQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    method = serializers.CharField(required=False, help_text="selector name, e.g. hive")
    dataset = IdField(required=False)
    team = serializers.SlugField(required=False)
    tag = serializers.CharField(required=False, help_text="runs carrying this tag")


class RunSerializer(serializers.Serializer):
    """A run in a list."""

    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    dataset = serializers.IntegerField(source="dataset_id")
    dataset_name = serializers.CharField(source="dataset.name")
    name = serializers.CharField()
    baseline = serializers.IntegerField(source="baseline_id", allow_null=True,
                                        help_text="id of the run this one is compared against, if named")
    created_by = serializers.CharField(source="created_by.username", default=None)
    status = serializers.CharField()
    reason = serializers.CharField(source="status_reason")
    cancel_requested = serializers.BooleanField()
    engine = serializers.CharField()
    methods = serializers.ListField(child=serializers.CharField())
    tags = serializers.ListField(child=serializers.CharField(), help_text="the run's short labels")
    steps_completed = serializers.IntegerField()
    steps_planned = serializers.IntegerField()
    forecast_device_hours = serializers.FloatField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ("number", "status", "worker", "job_id", "resumed_from_step", "reason", "started_at", "finished_at")


class EvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = ("step", "k", "pass_at_1", "pass_at_k", "prompts", "by_difficulty", "rollouts_generated_total",
                  "device_seconds_total", "created_at")


class RunTotalsSerializer(serializers.Serializer):
    steps = serializers.IntegerField(help_text="steps recorded")
    rollouts_generated = serializers.IntegerField()
    rollouts_uniform = serializers.IntegerField(help_text="what uniform GRPO would have generated (B x N a step)")
    rollouts_effective = serializers.IntegerField()
    rollouts_trained = serializers.IntegerField()
    rollout_savings = serializers.FloatField(
        allow_null=True, help_text=saving_help("rollout_savings", "; null: no step recorded yet"))
    rollouts_dynamic_sampling = serializers.FloatField(
        help_text="what dynamic sampling would have generated, over the steps that have an estimate")
    rollout_savings_vs_dynamic_sampling = serializers.FloatField(
        allow_null=True,
        help_text=saving_help("rollout_savings_vs_dynamic_sampling", "; null: no step has an estimate"))
    backward_tokens = serializers.IntegerField(help_text="response tokens in the updates")
    backward_tokens_mixed = serializers.IntegerField(help_text="response tokens of the mixed groups collected")
    backward_savings_vs_mixed = serializers.FloatField(
        allow_null=True, help_text=saving_help("backward_savings_vs_mixed", "; null: no group was mixed"))
    effective_share_of_generated = serializers.FloatField(
        allow_null=True, help_text="rollouts with a non-zero advantage / rollouts generated; null: none generated yet")
    device_hours = serializers.FloatField(help_text="device-hours used (measured)")
    uniform_device_hours = serializers.FloatField()
    device_hours_saved = serializers.FloatField(help_text="uniform_device_hours - device_hours")


class YardstickSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="uniform, dynamic_sampling, backward_mixed or uniform_budget")
    against = serializers.CharField(help_text="what the run's savings are measured against, in words")


def yardstick_rows(names: list[str]) -> list[dict[str, str]]:
    return [{"name": name, "against": YARDSTICKS[name]} for name in names]


class WarmupSerializer(serializers.Serializer):
    """The supervised warm-up's progress (controlplane.runs.selectors.WarmupProgress)."""

    step = serializers.IntegerField(help_text="warm-up steps done, as the newest warm-up heartbeat reported")
    steps = serializers.IntegerField(help_text="the warm-up's total steps")
    active = serializers.BooleanField(help_text="true while the run's current attempt warms up (RL not started)")
    device_seconds = serializers.FloatField(help_text="device time booked for the warm-up so far (every attempt's), "
                                                      "in the usage ledger and against the team's budget")


class WaitingForSerializer(serializers.Serializer):
    """Why a queued run waits (controlplane.runs.selectors.WaitingFor). Runs of the same engine
    are counted; the run's own team's are named by id, other teams' only counted."""

    kind = serializers.ChoiceField(choices=["broker", "queue", "slot", "worker"], help_text=(
        "broker: its launch has not reached the broker; queue: queued runs launched before it; slot: the workers "
        "are busy training; worker: nothing ahead of it, a worker has yet to claim it"))
    message = serializers.CharField(help_text="the same, in words")
    training = serializers.IntegerField(help_text="runs of its engine training now, every team's")
    training_team = serializers.ListField(child=serializers.IntegerField(),
                                          help_text="ids of those of the run's own team")
    training_other_teams = serializers.IntegerField(help_text="how many of those are other teams' (never named)")
    queued_ahead = serializers.IntegerField(help_text="queued runs of its engine launched before it, every team's")
    queued_ahead_team = serializers.ListField(child=serializers.IntegerField(),
                                              help_text="ids of those of the run's own team")
    queued_ahead_other_teams = serializers.IntegerField(help_text="how many of those are other teams' "
                                                                  "(never named)")


class RunDetailSerializer(serializers.Serializer):
    """A run with its attempts, config, latest evaluation and cumulative accounting; its warm-up's
    progress and, while it is queued, why it waits."""

    def to_representation(self, detail: RunDetail) -> dict:
        run = detail.run
        return {
            **RunSerializer(run).data,
            "config": run.config,
            "attempts_count": run.attempts_count,
            "attempts": AttemptSerializer(detail.attempts, many=True).data,
            "last_checkpoint_step": run.last_checkpoint_step,
            "heartbeat_at": serializers.DateTimeField().to_representation(run.heartbeat_at)
            if run.heartbeat_at else None,
            "latest_evaluation": EvaluationSerializer(detail.latest_evaluation).data
            if detail.latest_evaluation else None,
            "totals": RunTotalsSerializer(detail.totals).data,
            "yardsticks": YardstickSerializer(yardstick_rows(detail.yardsticks), many=True).data,
            "warmup": WarmupSerializer(detail.warmup).data if detail.warmup else None,
            "waiting_for": WaitingForSerializer(detail.waiting_for).data if detail.waiting_for else None,
        }


class RunDetailSchema(RunSerializer):
    """The detail shape, for the OpenAPI schema only (RunDetailSerializer renders it)."""

    config = serializers.DictField()
    attempts_count = serializers.IntegerField()
    attempts = AttemptSerializer(many=True)
    last_checkpoint_step = serializers.IntegerField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    latest_evaluation = EvaluationSerializer(allow_null=True)
    totals = RunTotalsSerializer()
    yardsticks = YardstickSerializer(many=True, help_text="the yardsticks that apply to the run's methods, "
                                                          "uniform GRPO first")
    warmup = WarmupSerializer(allow_null=True, help_text="null: no warm-up reported (none, a cached one, verl)")
    waiting_for = WaitingForSerializer(allow_null=True, help_text="null unless the run is queued")


class ConfigErrorsSerializer(serializers.Serializer):
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="{field: [messages]}")


class BudgetRefusalSerializer(serializers.Serializer):
    detail = serializers.CharField()
    forecast_device_hours = serializers.FloatField()
    remaining_device_hours = serializers.FloatField()


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


# -- telemetry reads -----------------------------------------------------------------------------------


class AfterQuerySerializer(serializers.Serializer):
    after = StepField(min_value=-1, default=-1, help_text="return steps > after (-1: from the start)")


class StepSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = StepSummary
        exclude = ("id", "run")
        extra_kwargs = {
            "rollout_savings": {"help_text": ("1 - rollouts_generated / rollouts_uniform. "
                                              f"Baseline: {YARDSTICKS['uniform']}")},
            "rollout_savings_vs_dynamic_sampling": {"help_text": (
                "1 - rollouts_generated / rollouts_dynamic_sampling; null: no estimate of the mixed rate yet. "
                f"Baseline: {YARDSTICKS['dynamic_sampling']}")},
            "backward_savings_vs_mixed": {"help_text": (
                "1 - backward_tokens / backward_tokens_mixed; null: no group was mixed. "
                f"Baseline: {YARDSTICKS['backward_mixed']}")},
            "mixed_rate_uniform": {"help_text": "windowed estimate of the mixed share of uniformly drawn groups; "
                                                "null: none yet"},
            "rollouts_dynamic_sampling": {"help_text": "what dynamic sampling would generate for this step's mixed "
                                                       "groups: groups_mixed_collected x N / mixed_rate_uniform; "
                                                       "null: no estimate"},
            "groups_uniform": {"help_text": "groups of uniformly drawn prompts this step"},
            "groups_uniform_mixed": {"help_text": "of those, groups with mixed outcomes"},
            "groups_mixed_collected": {"help_text": "mixed groups collected for the update"},
            "backward_tokens_mixed": {"help_text": "response tokens of those mixed groups"},
            "prompt_tokens_generated": {"help_text": "prompt tokens prefilled for the generated rollouts"},
            "backward_prompt_tokens": {"help_text": "prompt tokens through the update's forward and backward passes"},
        }


class CursorPageSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="the run's status now: stop polling once it is finished")
    next_after = serializers.IntegerField(help_text="pass as ?after= to get only what is newer")
    has_more = serializers.BooleanField(help_text="true: more is ready now; ask again at once")


class StepPageSerializer(CursorPageSerializer):
    results = StepSummarySerializer(many=True)


class EvaluationPageSerializer(CursorPageSerializer):
    results = EvaluationSerializer(many=True)


class DecisionQuerySerializer(serializers.Serializer):
    prompt = serializers.CharField(required=False, help_text="prompt key")
    method = serializers.CharField(required=False)
    action = serializers.ChoiceField(choices=[a.value for a in Action], required=False)
    after = StepField(required=False, min_value=-1, help_text="steps > after")
    step_min = StepField(required=False, min_value=0)
    step_max = StepField(required=False, min_value=0)

    def validate(self, attrs):
        if attrs.get("step_min") is not None and attrs.get("step_max") is not None \
                and attrs["step_min"] > attrs["step_max"]:
            raise serializers.ValidationError({"step_max": ["must be >= step_min"]})
        return attrs


class DecisionSerializer(serializers.ModelSerializer):
    class Meta:
        model = SelectionDecision
        fields = ("id", "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message")


class PromptQuerySerializer(serializers.Serializer):
    bucket = serializers.ChoiceField(choices=Bucket.choices, required=False)


class PromptStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = PromptState
        fields = ("prompt_key", "bucket", "pass_rate", "response_entropy", "prompt_entropy", "visits", "last_step")


# -- budgets ---------------------------------------------------------------------------------------------


class BudgetRunSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    name = serializers.CharField()
    user = serializers.CharField(allow_null=True)
    device_hours = serializers.FloatField()
    uniform_device_hours = serializers.FloatField()
    saved_device_hours = serializers.FloatField()


class BudgetUserSerializer(serializers.Serializer):
    user = serializers.CharField(allow_null=True)
    device_hours = serializers.FloatField()
    uniform_device_hours = serializers.FloatField()
    saved_device_hours = serializers.FloatField()


class TelemetryRetentionSerializer(serializers.Serializer):
    team = serializers.CharField(source="slug", read_only=True)
    telemetry_retention_days = serializers.IntegerField(
        allow_null=True, min_value=1,
        help_text="days a finished run's per-prompt telemetry stays in the database before it is archived to "
                  "Parquet; null: forever")


class BudgetOverviewSerializer(serializers.Serializer):
    team = serializers.CharField()
    period_start = serializers.DateField(allow_null=True)
    period_end = serializers.DateField(allow_null=True, help_text="exclusive")
    limit_device_hours = serializers.FloatField(allow_null=True, help_text="null: no budget this period")
    used_device_hours = serializers.FloatField()
    remaining_device_hours = serializers.FloatField(allow_null=True)
    forecast_device_hours = serializers.FloatField(allow_null=True,
                                                   help_text="use at period end, linear from use so far")
    uniform_device_hours = serializers.FloatField(help_text="what uniform GRPO would have used for the same steps")
    saved_device_hours = serializers.FloatField()
    warning = serializers.BooleanField(help_text="80% of the limit used")
    exhausted = serializers.BooleanField(help_text="100% of the limit used: running runs stop")
    by_run = BudgetRunSerializer(many=True)
    by_user = BudgetUserSerializer(many=True)


# -- ingestion ----------------------------------------------------------------------------------------------

EVENTS = tuple(EVENT_ROUTES)


class EventRecordSerializer(serializers.Serializer):
    """An ingest body validated into its event's typed record (workers.record: a ``StepRecord``
    for a step), by the record's own ``from_wire``: the rules the in-process sink's records
    obey. ``context={"event": name}``; a step when absent."""

    def to_internal_value(self, data):
        try:
            return event_read(self.context.get("event", "step"), data)
        except RecordError as exc:
            raise serializers.ValidationError({exc.where: [exc.problem]}) from exc
        except (TypeError, ValueError, KeyError, RecursionError) as exc:  # reading is pure: the body's fault
            raise serializers.ValidationError({"record": [f"cannot be read ({type(exc).__name__}: {exc})"]}) from exc


class StepRecordSerializer(EventRecordSerializer):
    """A step body validated into a ``StepRecord`` (its ``validated_data``)."""


class ControlSerializer(serializers.Serializer):
    control = serializers.ChoiceField(choices=["continue", "cancel", "stop_budget"])
