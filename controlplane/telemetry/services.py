"""Telemetry ingestion: the control plane's side of the engines' TelemetrySink.

A step record is written in one transaction and idempotently per (run, step): the step's
earlier rows are deleted first, so a step replayed after a resume replaces its rows and
is never counted twice. Bulk rows go in with COPY on Postgres (a batch insert elsewhere).
The answer carries the control signal back: cancel, stop for budget, or continue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from controlplane.budgets.selectors import budget_status
from controlplane.budgets.services import uniform_device_seconds, usage_record
from controlplane.runs.models import FINISHED, Attempt, Run, RunStatus
from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    RunToken,
    SelectionDecision,
    StepSummary,
)
from workers.engines.telemetry import Control

OBSERVATION_COLUMNS = ("run_id", "step", "prompt_key", "group_size", "successes", "pass_rate", "response_entropy",
                       "prompt_entropy", "energy", "response_tokens", "trained", "bucket")
DECISION_COLUMNS = ("run_id", "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message")
SUMMARY_FIELDS = ("rollouts_generated", "tokens_generated", "rollouts_effective", "rollouts_trained",
                  "rollouts_uniform", "groups_generated", "groups_all_correct", "groups_all_wrong", "groups_trained",
                  "forward_tokens_extra", "backward_tokens", "rollout_savings", "effective_share_of_generated",
                  "flops_estimate", "flops_uniform_estimate", "device_seconds")
# Added with the savings yardsticks (workers.selection.accounting.YARDSTICKS). Optional: an
# engine built before them still reports, and its steps keep the defaults (0, or NULL: no
# estimate), which the cumulative savings leave out.
SUMMARY_COUNTS = ("prompt_tokens_generated", "backward_prompt_tokens", "groups_uniform", "groups_uniform_mixed",
                  "groups_mixed_collected", "backward_tokens_mixed")
SUMMARY_ESTIMATES = ("mixed_rate_uniform", "rollouts_dynamic_sampling", "rollout_savings_vs_dynamic_sampling",
                     "backward_savings_vs_mixed")  # NaN (sent as "NaN") where there is none: stored as NULL


class IngestError(ValueError):
    """A record that cannot be stored: says which part is wrong."""


def _number(value: Any) -> float | None:
    """JSON carries NaN as the string "NaN" (json_safe); the database stores NULL."""
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


# -- bulk insert ----------------------------------------------------------------------------------
def bulk_insert(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows into ``table`` on Postgres; executemany elsewhere. Returns the row count."""
    rows = list(rows)
    if not rows:
        return 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            raw = cursor.cursor  # psycopg 3 cursor under Django's wrapper
            with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    return len(rows)


def _observation_rows(run_id: int, step: int, observations: list[dict[str, Any]]) -> Iterable[tuple]:
    for o in observations:
        yield (run_id, step, o["prompt_key"], int(o["group_size"]), int(o["successes"]), float(o["pass_rate"]),
               _number(o.get("response_entropy")), _number(o.get("prompt_entropy")), _number(o.get("energy")),
               int(o.get("response_tokens", 0)), bool(o["trained"]), o["bucket"])


def _decision_rows(run_id: int, decisions: list[dict[str, Any]]) -> Iterable[tuple]:
    for d in decisions:
        yield (run_id, int(d["step"]), d["prompt_key"], d["layer"], d["method"], d["action"], d["reason"],
               json.dumps(d.get("scores", {})), d["message"])


# -- the step -------------------------------------------------------------------------------------
def _check_step_record(record: Any) -> tuple[int, dict[str, Any], list[dict], list[dict]]:
    try:
        step = int(record["step"])
        summary = record["summary"]
        observations = list(record.get("observations", []))
        decisions = list(record.get("decisions", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise IngestError(f"a step record needs step, summary, observations and decisions: {exc}") from exc
    if step < 0 or not isinstance(summary, dict):
        raise IngestError("step must be >= 0 and summary an object")
    missing = [name for name in (*SUMMARY_FIELDS, "device_seconds") if name not in summary]
    if missing:
        raise IngestError(f"the step summary lacks {', '.join(missing)}")
    return step, summary, observations, decisions


def _check_attempt(run: Run, attempt: int | None) -> None:
    """Fencing: a worker that lost its run (and whose attempt was replaced) writes nothing."""
    if attempt is not None and run.attempts_count != attempt:
        raise IngestError(f"attempt {attempt} of run {run.pk} was replaced by attempt {run.attempts_count}: "
                          "this engine must stop")


@transaction.atomic
def step_ingest(*, run_id: int, record: dict[str, Any], attempt: int | None = None) -> Control:
    """Store one step record; answer with the control signal for the engine.

    ``attempt`` (the in-process sink passes it) fences off a worker whose run was
    reconciled and started again elsewhere.
    """
    step, summary, observations, decisions = _check_step_record(record)
    run = Run.objects.select_for_update().get(pk=run_id)
    _check_attempt(run, attempt)
    if run.status in FINISHED or run.status == RunStatus.QUEUED:
        raise IngestError(f"run {run_id} is {run.status}: it takes no steps now")
    StepSummary.objects.filter(run=run, step=step).delete()
    PromptObservation.objects.filter(run=run, step=step).delete()
    SelectionDecision.objects.filter(run=run, step=step).delete()

    uniform = uniform_device_seconds(summary)
    train = summary.get("train", {})
    StepSummary.objects.create(
        run=run, step=step, epoch=int(record.get("epoch", 0)),
        **{name: summary[name] for name in SUMMARY_FIELDS},
        **{name: int(summary.get(name) or 0) for name in SUMMARY_COUNTS},
        **{name: _number(summary.get(name)) for name in SUMMARY_ESTIMATES},
        uniform_device_seconds=uniform,
        reward_mean=_number(train.get("reward_mean")), loss=_number(train.get("loss")),
        seconds=summary.get("seconds", {}), metrics=_json_clean(summary.get("metrics", {})),
        train=_json_clean(train), alerts=record.get("alerts", []),
    )
    try:
        observation_rows = list(_observation_rows(run.id, step, observations))
        decision_rows = list(_decision_rows(run.id, decisions))
    except (KeyError, TypeError, ValueError) as exc:
        raise IngestError(f"step {step}: an observation or decision lacks a field or has a bad value: {exc!r}") \
            from exc
    bulk_insert(PromptObservation._meta.db_table, OBSERVATION_COLUMNS, observation_rows)
    bulk_insert(SelectionDecision._meta.db_table, DECISION_COLUMNS, decision_rows)
    _update_prompt_states(run, step, observations, decisions)
    usage_record(run=run, step=step, device_seconds=float(summary["device_seconds"]), uniform_seconds=uniform)

    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        steps_completed=step + 1, heartbeat_at=now, status_reason="",
        status=RunStatus.RUNNING if run.status in (RunStatus.STARTING, RunStatus.LOST) else run.status,
    )
    if run.cancel_requested:
        return Control.CANCEL
    if budget_status(run.team_id).exhausted:
        return Control.STOP_BUDGET
    return Control.CONTINUE


def _json_clean(value: Any) -> Any:
    """JSON columns refuse NaN: store it as null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_clean(v) for v in value]
    return value


STATE_COLUMNS = ("run_id", "prompt_key", "bucket", "pass_rate", "response_entropy", "prompt_entropy", "visits",
                 "last_step")

# One upsert per prompt: a newer (or the same, replayed) step overwrites; an older step
# replayed after newer ones changes nothing. Visits count each step once.
_STATE_CONFLICT = """
ON CONFLICT (run_id, prompt_key) DO UPDATE SET
    bucket = EXCLUDED.bucket,
    pass_rate = COALESCE(EXCLUDED.pass_rate, {t}.pass_rate),
    response_entropy = COALESCE(EXCLUDED.response_entropy, {t}.response_entropy),
    prompt_entropy = COALESCE(EXCLUDED.prompt_entropy, {t}.prompt_entropy),
    visits = {t}.visits + CASE WHEN EXCLUDED.last_step > {t}.last_step THEN EXCLUDED.visits ELSE 0 END,
    last_step = EXCLUDED.last_step
WHERE EXCLUDED.last_step >= {t}.last_step
"""


def _update_prompt_states(run: Run, step: int, observations: list[dict], decisions: list[dict]) -> None:
    """Upsert the current learning-edge state of every prompt this step touched (one statement)."""
    latest: dict[str, list[Any]] = {}
    for o in observations:
        latest[o["prompt_key"]] = [run.id, o["prompt_key"], o["bucket"], float(o["pass_rate"]),
                                   _number(o.get("response_entropy")), _number(o.get("prompt_entropy")), 1, step]
    for d in decisions:  # pruning happens at epoch ends, without an observation
        if d["action"] == "pruned":
            row = latest.setdefault(d["prompt_key"], [run.id, d["prompt_key"], "pruned", None, None, None, 0, step])
            row[2] = "pruned"
    if not latest:
        return
    table = PromptState._meta.db_table
    conflict = _STATE_CONFLICT.format(t=table)
    rows = list(latest.values())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            types = ("bigint", "text", "text", "float8", "float8", "float8", "int", "int")
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            cursor.execute(f"INSERT INTO {table} ({', '.join(STATE_COLUMNS)}) SELECT * FROM unnest({arrays})"
                           + conflict, [list(c) for c in zip(*rows)])
        else:
            marks = ", ".join(["%s"] * len(STATE_COLUMNS))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(STATE_COLUMNS)}) VALUES ({marks})" + conflict, rows)


# -- the other events -------------------------------------------------------------------------------
def evaluation_ingest(*, run_id: int, record: dict[str, Any]) -> None:
    from django.db.models import Sum

    step = int(record["step"])
    totals = StepSummary.objects.filter(run_id=run_id, step__lt=step).aggregate(
        rollouts=Sum("rollouts_generated"), seconds=Sum("device_seconds"))
    Evaluation.objects.update_or_create(
        run_id=run_id, step=step,
        defaults={"k": int(record["k"]), "pass_at_1": float(record["pass_at_1"]),
                  "pass_at_k": float(record["pass_at_k"]), "prompts": int(record["prompts"]),
                  "by_difficulty": _json_clean(record.get("by_difficulty", {})),
                  "rollouts_generated_total": totals["rollouts"] or 0, "device_seconds_total": totals["seconds"] or 0.0},
    )


def run_started_ingest(*, run_id: int, resumed_from_step: int | None) -> None:
    now = timezone.now()
    Run.objects.filter(pk=run_id, status__in=[RunStatus.STARTING, RunStatus.RUNNING]).update(
        status=RunStatus.RUNNING, heartbeat_at=now)
    Run.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    Attempt.objects.filter(run_id=run_id, finished_at__isnull=True).update(
        status=RunStatus.RUNNING, resumed_from_step=resumed_from_step)


def heartbeat_ingest(*, run_id: int, detail: str, attempt: int | None = None) -> None:
    """Proof of life between steps; the detail shows as the run's status reason."""
    runs = Run.objects.filter(pk=run_id, status__in=[RunStatus.STARTING, RunStatus.RUNNING])
    if attempt is not None:
        runs = runs.filter(attempts_count=attempt)
    runs.update(heartbeat_at=timezone.now(), status_reason=detail[:500])


def checkpoint_ingest(*, run_id: int, step: int) -> None:
    Run.objects.filter(pk=run_id).update(last_checkpoint_step=step, heartbeat_at=timezone.now())


@transaction.atomic
def run_finished_ingest(*, run_id: int, status: str, reason: str, attempt: int | None = None) -> None:
    """Final status of the run and its open attempt; the run's tokens stop working."""
    run = Run.objects.select_for_update().get(pk=run_id)
    _check_attempt(run, attempt)
    now = timezone.now()
    Run.objects.filter(pk=run_id).exclude(status__in=FINISHED).update(
        status=status, status_reason=reason, finished_at=now)
    Attempt.objects.filter(run_id=run_id, finished_at__isnull=True).update(status=status, reason=reason,
                                                                            finished_at=now)
    tokens_revoke(run_id=run_id)


def tokens_revoke(*, run_id: int) -> None:
    RunToken.objects.filter(run_id=run_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


# -- tokens ---------------------------------------------------------------------------------------------
def token_issue(*, run_id: int) -> str:
    return RunToken.objects.create(run_id=run_id).key


def token_run(key: str) -> int | None:
    """The run a live token is scoped to, or None."""
    token = RunToken.objects.filter(key=key, revoked_at__isnull=True).only("run_id").first()
    return token.run_id if token else None


# -- the sink -----------------------------------------------------------------------------------------
class ControlPlaneSink:
    """The engines' TelemetrySink, in-process: for the local engine inside a worker."""

    def __init__(self, run_id: int, attempt: int | None = None) -> None:
        self.run_id = run_id
        self.attempt = attempt

    def run_started(self, *, config: dict[str, Any], model_parameters: int, dataset_size: int,
                    resumed_from_step: int | None) -> None:
        run_started_ingest(run_id=self.run_id, resumed_from_step=resumed_from_step)

    def step(self, record: dict[str, Any]) -> Control:
        return step_ingest(run_id=self.run_id, record=json.loads(json.dumps(record, default=float)),
                           attempt=self.attempt)

    def evaluation(self, record: dict[str, Any]) -> None:
        evaluation_ingest(run_id=self.run_id, record=record)

    def checkpoint_saved(self, *, step: int, path: str) -> None:
        checkpoint_ingest(run_id=self.run_id, step=step)

    def heartbeat(self, *, phase: str, detail: str) -> None:
        heartbeat_ingest(run_id=self.run_id, detail=detail, attempt=self.attempt)

    def run_finished(self, *, status: str, reason: str) -> None:
        run_finished_ingest(run_id=self.run_id, status=str(status), reason=reason, attempt=self.attempt)

