"""Input validation and output shapes of the JSON API. No business logic here: the
services decide, these only check types and render."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from controlplane.datasets.models import Dataset
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.selectors import SAVINGS, RunDetail
from controlplane.telemetry.models import (
    Bucket,
    Evaluation,
    PromptState,
    SelectionDecision,
    StepSummary,
)
from controlplane.telemetry.services import EVENT_ROUTES, event_read
from workers.record import RecordError
from workers.selection.accounting import YARDSTICKS
from workers.selection.decisions import Action


def saving_help(name: str, scope: str = "") -> str:
    """A saving's help text: its formula (``SAVINGS``) and, in words, what it is measured
    against (``YARDSTICKS``)."""
    yardstick, formula = SAVINGS[name]
    return f"{formula}{scope}. Baseline: {YARDSTICKS[yardstick]}"

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


class RunCreateSerializer(serializers.Serializer):
    team = serializers.SlugField(help_text="the team's slug")
    dataset = serializers.IntegerField(help_text="id of one of the team's datasets")
    name = serializers.CharField(max_length=200)
    config = serializers.DictField(
        required=False, default=dict,
        help_text="RunConfig fields (workers/engines/config.py); the dataset comes from `dataset`")
    baseline = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="id of a run of the same team to compare this run against (the cost to reach its final "
                  "held-out Pass@1)")

    def validate(self, attrs: dict) -> dict:
        """``baseline`` becomes the Run, which must belong to the named team (run_create
        checks again; here the error lands on the field)."""
        baseline = attrs.get("baseline")
        if baseline is not None:
            run = Run.objects.filter(pk=baseline, team__slug=attrs["team"]).first()
            if run is None:
                raise serializers.ValidationError({"baseline": [f"no run {baseline} in team {attrs['team']}"]})
            attrs["baseline"] = run
        return attrs


class RunQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    method = serializers.CharField(required=False, help_text="selector name, e.g. hive")
    dataset = serializers.IntegerField(required=False)
    team = serializers.SlugField(required=False)


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


class RunDetailSerializer(serializers.Serializer):
    """A run with its attempts, config, latest evaluation and cumulative accounting."""

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
    after = serializers.IntegerField(min_value=-1, default=-1, help_text="return steps > after (-1: from the start)")


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
    after = serializers.IntegerField(required=False, min_value=-1, help_text="steps > after")
    step_min = serializers.IntegerField(required=False, min_value=0)
    step_max = serializers.IntegerField(required=False, min_value=0)

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
