"""Telemetry ingestion: the control plane's side of the engines' TelemetrySink.

A step record is written in one transaction and idempotently per (run, step): the step's
earlier rows are deleted first, so a step replayed after a resume replaces its rows and
is never counted twice. Bulk rows go in with COPY on Postgres (a batch insert elsewhere).
The answer carries the control signal back: cancel, stop for budget, or continue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from controlplane.budgets.selectors import budget_status
from controlplane.budgets.services import uniform_device_seconds, usage_add_warmup, usage_record
from controlplane.notifications.services import notification_alerts_record, notification_run_ended
from controlplane.operations.metrics import ingest_rows_count
from controlplane.runs.models import FINISHED, Attempt, Run, RunStatus
from controlplane.runs.selectors import run_totals
from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    RunToken,
    SelectionDecision,
    StepSummary,
)
from workers.record import (
    ESTIMATES,
    MAX_REASON,
    OPTIONAL_COUNTS,
    REQUIRED_SUMMARY,
    CheckpointSaved,
    Control,
    DecisionRecord,
    EvaluationRecord,
    Heartbeat,
    Observation,
    RecordError,
    RunFinished,
    RunStarted,
    StepRecord,
)

OBSERVATION_COLUMNS = ("run_id", "step", "prompt_key", "group_size", "successes", "pass_rate", "response_entropy",
                       "prompt_entropy", "energy", "response_tokens", "trained", "bucket")
DECISION_COLUMNS = ("run_id", "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message")
# Summary columns, named as in the record (workers.record.StepSummary): every count, figure and
# estimate of the record that the table stores (a missing estimate is NULL, left out of the
# cumulative savings).
SUMMARY_COLUMNS = tuple(name for name in (*REQUIRED_SUMMARY, *OPTIONAL_COUNTS, *ESTIMATES)
                        if name in {f.name for f in StepSummary._meta.concrete_fields})


class IngestError(ValueError):
    """A record that cannot be stored: says which part is wrong."""


class AttemptReplaced(IngestError):
    """The event comes from an attempt the run has replaced: its engine must stop."""


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


def _observation_rows(run_id: int, step: int, observations: Sequence[Observation]) -> Iterable[tuple]:
    for o in observations:
        yield (run_id, step, o.prompt_key, o.group_size, o.successes, float(o.pass_rate), o.response_entropy,
               o.prompt_entropy, o.energy, o.response_tokens, o.trained, o.bucket)


def _decision_rows(run_id: int, decisions: Sequence[DecisionRecord]) -> Iterable[tuple]:
    for d in decisions:
        yield (run_id, d.step, d.prompt_key, d.layer, d.method, d.action, d.reason, json.dumps(dict(d.scores)),
               d.message)


# -- the step -------------------------------------------------------------------------------------
def _check_attempt(run: Run, attempt: int | None) -> None:
    """Fencing: a worker that lost its run writes nothing. Its attempt was replaced, or the run
    was judged lost and requeued (or ended) before a new attempt claimed it: the number is
    still the run's, but the run is not running it."""
    if attempt is None:
        return
    if run.attempts_count != attempt:
        raise AttemptReplaced(f"attempt {attempt} of run {run.pk} was replaced by attempt {run.attempts_count}: "
                              "this engine must stop")
    if run.status not in (RunStatus.STARTING, RunStatus.RUNNING):
        raise AttemptReplaced(f"run {run.pk} is {run.status} ({run.status_reason or 'no reason given'}): "
                              f"attempt {attempt} no longer runs it; this engine must stop")


def _fenced_run(run_id: int, attempt: int | None) -> Run:
    """The run, locked for this transaction, once ``attempt`` is its current one: every event
    kind goes through here, so a replaced attempt can write nothing at all."""
    run = Run.objects.select_for_update().get(pk=run_id)
    _check_attempt(run, attempt)
    return run


def _control(run: Run) -> Control:
    """What the engine is told at its next boundary (a step, or a warm-up heartbeat)."""
    if run.cancel_requested:
        return Control.CANCEL
    if budget_status(run.team_id).exhausted:
        return Control.STOP_BUDGET
    return Control.CONTINUE


@transaction.atomic
def step_ingest(*, run_id: int, record: StepRecord | Mapping[str, Any], attempt: int | None = None) -> Control:
    """Store one step record; answer with the control signal for the engine.

    ``record`` is a ``StepRecord`` (checked when it was built); a mapping is read as the wire
    form (``StepRecord.from_wire``, the HTTP ingest's rules). ``attempt`` fences off a worker
    whose run was reconciled and started again elsewhere.
    """
    if not isinstance(record, StepRecord):
        record = StepRecord.from_wire(record)
    step, summary = record.step, record.summary
    run = _fenced_run(run_id, attempt)
    if run.status in FINISHED or run.status == RunStatus.QUEUED:
        raise IngestError(f"run {run_id} is {run.status}: it takes no steps now")
    StepSummary.objects.filter(run=run, step=step).delete()
    PromptObservation.objects.filter(run=run, step=step).delete()
    SelectionDecision.objects.filter(run=run, step=step).delete()

    seconds = dict(summary.seconds)
    uniform = uniform_device_seconds({"seconds": seconds, "rollouts_uniform": summary.rollouts_uniform,
                                      "rollouts_generated": summary.rollouts_generated,
                                      "rollouts_trained": summary.rollouts_trained})
    StepSummary.objects.create(
        run=run, step=step, epoch=record.epoch,
        **{name: getattr(summary, name) for name in SUMMARY_COLUMNS},
        uniform_device_seconds=uniform, reward_mean=summary.train.reward_mean, loss=summary.train.loss,
        seconds=seconds, metrics=dict(summary.metrics), train=summary.train.to_wire(), alerts=list(record.alerts),
    )
    notification_alerts_record(run=run, step=step, alerts=record.alerts)
    observed = bulk_insert(PromptObservation._meta.db_table, OBSERVATION_COLUMNS,
                           _observation_rows(run.id, step, record.observations))
    decided = bulk_insert(SelectionDecision._meta.db_table, DECISION_COLUMNS, _decision_rows(run.id, record.decisions))
    ingest_rows_count(steps=1, observations=observed, decisions=decided)  # edgeplane_ingest_rows_total, on commit
    _update_prompt_states(run, step, record.observations, record.decisions)
    usage_record(run=run, step=step, device_seconds=float(summary.device_seconds), uniform_seconds=uniform)

    Run.objects.filter(pk=run.pk).update(
        steps_completed=step + 1, heartbeat_at=Now(), status_reason="", warmup_attempt=None,
        status=RunStatus.RUNNING if run.status in (RunStatus.STARTING, RunStatus.LOST) else run.status,
    )
    return _control(run)


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


def _update_prompt_states(run: Run, step: int, observations: Sequence[Observation],
                          decisions: Sequence[DecisionRecord]) -> None:
    """Upsert the current learning-edge state of every prompt this step touched (one statement)."""
    latest: dict[str, list[Any]] = {}
    for o in observations:
        latest[o.prompt_key] = [run.id, o.prompt_key, o.bucket, float(o.pass_rate), o.response_entropy,
                                o.prompt_entropy, 1, step]
    for d in decisions:  # pruning happens at epoch ends, without an observation
        if d.action == "pruned":
            row = latest.setdefault(d.prompt_key, [run.id, d.prompt_key, "pruned", None, None, None, 0, step])
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
@transaction.atomic
def evaluation_ingest(*, run_id: int, record: EvaluationRecord | Mapping[str, Any],
                      attempt: int | None = None) -> None:
    """Store an evaluation (a mapping is read as the wire form, ``EvaluationRecord.from_wire``)
    with what the run had spent before it: the totals of the steps before its step."""
    if not isinstance(record, EvaluationRecord):
        record = EvaluationRecord.from_wire(record)
    _fenced_run(run_id, attempt)
    spent = run_totals(Run(pk=run_id), through_step=record.step - 1)
    Evaluation.objects.update_or_create(
        run_id=run_id, step=record.step,
        defaults={"k": record.k, "pass_at_1": float(record.pass_at_1), "pass_at_k": float(record.pass_at_k),
                  "prompts": record.prompts, "by_difficulty": dict(record.by_difficulty),
                  "rollouts_generated_total": spent.rollouts_generated,
                  "device_seconds_total": spent.device_seconds},
    )


@transaction.atomic
def run_started_ingest(*, run_id: int, resumed_from_step: int | None, attempt: int | None = None) -> None:
    _fenced_run(run_id, attempt)
    Run.objects.filter(pk=run_id, status__in=[RunStatus.STARTING, RunStatus.RUNNING]).update(
        status=RunStatus.RUNNING, heartbeat_at=Now(), warmup_attempt=None)  # RL starts: the warm-up is over
    Run.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=Now())
    Attempt.objects.filter(run_id=run_id, finished_at__isnull=True).update(
        status=RunStatus.RUNNING, resumed_from_step=resumed_from_step)


@transaction.atomic
def heartbeat_ingest(*, run_id: int, detail: str, attempt: int | None = None, phase: str = "",
                     device_seconds: float | None = None, warmup_step: int | None = None,
                     warmup_steps: int | None = None) -> Control:
    """Proof of life between steps; the detail shows as the run's status reason. A warm-up's
    heartbeat books the device-seconds it reports to the run's warm-up usage, and its progress
    (``warmup_step`` of ``warmup_steps``) becomes the run's, for the attempt that sent it.
    Answers the control signal, so a warm-up stops at its next heartbeat once cancelled or out
    of budget."""
    if warmup_step is not None or warmup_steps is not None:  # the record's rules, for a direct call too
        Heartbeat(phase=phase, detail="", warmup_step=warmup_step, warmup_steps=warmup_steps)
    run = _fenced_run(run_id, attempt)
    if device_seconds and phase != Heartbeat.WARMUP:
        raise IngestError(f"device_seconds is booked for the warm-up only, not phase {phase!r}")
    if run.status not in (RunStatus.STARTING, RunStatus.RUNNING):
        return _control(run)  # lost, requeued or ended meanwhile: nothing to keep alive here
    if device_seconds:
        usage_add_warmup(run=run, device_seconds=device_seconds)
    progress = {} if warmup_steps is None else {
        "warmup_step": warmup_step, "warmup_steps": warmup_steps,
        "warmup_attempt": attempt if attempt is not None else run.attempts_count}
    Run.objects.filter(pk=run_id).update(heartbeat_at=Now(), status_reason=detail[:500], **progress)
    return _control(run)


@transaction.atomic
def checkpoint_ingest(*, run_id: int, step: int, attempt: int | None = None) -> None:
    _fenced_run(run_id, attempt)
    Run.objects.filter(pk=run_id).update(last_checkpoint_step=step, heartbeat_at=Now())


@transaction.atomic
def run_finished_ingest(*, run_id: int, status: str, reason: str, attempt: int | None = None) -> None:
    """Final status of the run and its open attempt; the run's tokens stop working. The same end
    reported again (a sink's retry whose first answer was lost) changes nothing."""
    if attempt is not None and Run.objects.filter(pk=run_id, attempts_count=attempt, status=status).exists():
        return
    _fenced_run(run_id, attempt)
    now = timezone.now()
    Run.objects.filter(pk=run_id).exclude(status__in=FINISHED).update(
        status=status, status_reason=reason, finished_at=now)
    Attempt.objects.filter(run_id=run_id, finished_at__isnull=True).update(status=status, reason=reason,
                                                                            finished_at=now)
    tokens_revoke(run_id=run_id)
    notification_run_ended(run_id=run_id)


def tokens_revoke(*, run_id: int) -> None:
    RunToken.objects.filter(run_id=run_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


# -- tokens ---------------------------------------------------------------------------------------------
def token_issue(*, run_id: int) -> str:
    return RunToken.objects.create(run_id=run_id).key


def token_run(key: str) -> int | None:
    """The run a live token is scoped to, or None."""
    token = RunToken.objects.filter(key=key, revoked_at__isnull=True).only("run_id").first()
    return token.run_id if token else None


# -- the event table ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventRoute:
    """An event's typed record (its ``from_wire`` reads an HTTP body) and the service that
    stores it, called as ``ingest(run_id, record, attempt)``."""

    record: type
    ingest: Callable[[int, Any, int | None], Control | None]


# event name -> record type and service: the one table behind the HTTP ingest view and the
# in-process sink. Steps and heartbeats answer a control signal; the other events answer None.
# Every service fences off a replaced attempt (AttemptReplaced).
EVENT_ROUTES: dict[str, EventRoute] = {
    "step": EventRoute(StepRecord, lambda run_id, r, attempt: step_ingest(run_id=run_id, record=r, attempt=attempt)),
    "evaluation": EventRoute(EvaluationRecord, lambda run_id, r, attempt: evaluation_ingest(
        run_id=run_id, record=r, attempt=attempt)),
    "run_started": EventRoute(RunStarted, lambda run_id, r, attempt: run_started_ingest(
        run_id=run_id, resumed_from_step=r.resumed_from_step, attempt=attempt)),
    "checkpoint": EventRoute(CheckpointSaved, lambda run_id, r, attempt: checkpoint_ingest(
        run_id=run_id, step=r.step, attempt=attempt)),
    "heartbeat": EventRoute(Heartbeat, lambda run_id, r, attempt: heartbeat_ingest(
        run_id=run_id, detail=r.detail, attempt=attempt, phase=r.phase, device_seconds=r.device_seconds,
        warmup_step=r.warmup_step, warmup_steps=r.warmup_steps)),
    "run_finished": EventRoute(RunFinished, lambda run_id, r, attempt: run_finished_ingest(
        run_id=run_id, status=r.status, reason=r.reason, attempt=attempt)),
}


def event_read(event: str, body: Mapping[str, Any]) -> Any:
    """An HTTP body as the event's typed record; ``RecordError`` says what is wrong."""
    route = EVENT_ROUTES.get(event)
    if route is None:
        raise RecordError("event", f"unknown event {event!r}; one of {', '.join(EVENT_ROUTES)}")
    return route.record.from_wire(body)


def event_ingest(*, run_id: int, record: Any, attempt: int | None = None) -> Control | None:
    """Store one typed event record through its service (``EVENT_ROUTES``)."""
    route = EVENT_ROUTES.get(getattr(record, "EVENT", None))
    if route is None or not isinstance(record, route.record):
        raise TypeError(f"not an event record: {type(record).__name__}; one of "
                        f"{', '.join(r.record.__name__ for r in EVENT_ROUTES.values())}")
    return route.ingest(run_id, record, attempt)


# -- the sink -----------------------------------------------------------------------------------------
class ControlPlaneSink:
    """The engines' TelemetrySink, in-process: for the local engine inside a worker. Each
    event becomes its typed record and goes through ``event_ingest``, as an HTTP one does."""

    def __init__(self, run_id: int, attempt: int | None = None) -> None:
        self.run_id = run_id
        self.attempt = attempt

    def _ingest(self, record: Any) -> Control | None:
        return event_ingest(run_id=self.run_id, record=record, attempt=self.attempt)

    def run_started(self, *, config: dict[str, Any], model_parameters: int, dataset_size: int,
                    resumed_from_step: int | None) -> None:
        self._ingest(RunStarted(resumed_from_step=resumed_from_step))

    def step(self, record: StepRecord) -> Control:
        return cast(Control, self._ingest(record))  # a step's service always answers

    def evaluation(self, record: dict[str, Any]) -> None:
        self._ingest(EvaluationRecord.measured(record))

    def checkpoint_saved(self, *, step: int, path: str) -> None:
        self._ingest(CheckpointSaved(step=step, path=path))

    def heartbeat(self, *, phase: str, detail: str, device_seconds: float | None = None,
                  warmup_step: int | None = None, warmup_steps: int | None = None) -> Control:
        return cast(Control, self._ingest(Heartbeat(phase=phase, detail=detail[:500], device_seconds=device_seconds,
                                                    warmup_step=warmup_step, warmup_steps=warmup_steps)))

    def run_finished(self, *, status: str, reason: str) -> None:
        self._ingest(RunFinished(status=str(status), reason=reason[:MAX_REASON]))
