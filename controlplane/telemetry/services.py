"""Telemetry ingestion: the control plane's side of the engines' TelemetrySink.

A step record is written in one transaction and idempotently per (run, step): the step's
earlier rows are deleted first, so a step replayed after a resume replaces its rows and
is never counted twice. Bulk rows go in with COPY on Postgres (a batch insert elsewhere).
The answer carries the control signal back: cancel, stop for budget, or continue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import DataError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from controlplane.budgets.selectors import BudgetStatus, budget_now
from controlplane.budgets.services import uniform_device_seconds, usage_add_warmup, usage_record
from controlplane.notifications.services import notification_alerts_record, notification_run_ended
from controlplane.operations.metrics import ingest_rows_count
from controlplane.runs.models import FINISHED, Attempt, Run, RunStatus
from controlplane.runs.selectors import run_totals
from controlplane.telemetry.counts import COUNT_TYPES, decision_counts
from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    RunToken,
    SelectionDecision,
    StepDecisionCount,
    StepSummary,
)
from controlplane.telemetry.pgcopy import CopyTypeError, binary_copy_chunks, supported
from workers.record import (
    ESTIMATES,
    MAX_REASON,
    OPTIONAL_COUNTS,
    REQUIRED_SUMMARY,
    CheckpointSaved,
    Control,
    DecisionRows,
    EvaluationRecord,
    Heartbeat,
    ObservationRows,
    RecordError,
    RunFinished,
    RunStarted,
    StepRecord,
)

# The per-prompt tables' columns and their Arrow types (how COPY receives them).
OBSERVATION_TYPES = {"run_id": pa.int64(), "step": pa.int64(), "prompt_key": pa.string(), "group_size": pa.int64(),
                     "successes": pa.int64(), "pass_rate": pa.float64(), "response_entropy": pa.float64(),
                     "prompt_entropy": pa.float64(), "energy": pa.float64(), "response_tokens": pa.int64(),
                     "trained": pa.bool_(), "bucket": pa.string()}
DECISION_TYPES = {"run_id": pa.int64(), "step": pa.int64(), "prompt_key": pa.string(), "layer": pa.string(),
                  "method": pa.string(), "action": pa.string(), "reason": pa.string(), "scores": pa.string(),
                  "message": pa.string()}
STATE_TYPES = {"run_id": pa.int64(), "prompt_key": pa.string(), "bucket": pa.string(), "pass_rate": pa.float64(),
               "response_entropy": pa.float64(), "prompt_entropy": pa.float64(), "visits": pa.int64(),
               "last_step": pa.int64()}
OBSERVATION_COLUMNS = tuple(OBSERVATION_TYPES)
DECISION_COLUMNS = tuple(DECISION_TYPES)
STATE_COLUMNS = tuple(STATE_TYPES)
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
Columns = Mapping[str, "list[Any] | pa.Array"]


def _constant(value: Any, rows: int) -> pa.Array:
    return pa.array(np.full(rows, value))


def copy_columns(table: str, types: Mapping[str, pa.DataType], columns: Columns) -> int:
    """Insert rows given as columns (each a list or an Arrow array, one per name in ``types``).

    On Postgres: one binary COPY (``telemetry.pgcopy``), each row's bytes made by Arrow in C, so
    no Python runs per row (a list is read into an Arrow array once). Elsewhere (SQLite):
    executemany. Returns the row count."""
    rows = len(next(iter(columns.values()))) if columns else 0
    if not rows:
        return 0
    names = ", ".join(types)
    if connection.vendor != "postgresql":
        values = [c.to_pylist() if isinstance(c, pa.Array) else c for c in (columns[n] for n in types)]
        marks = ", ".join(["%s"] * len(types))
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(zip(*values, strict=True)))
        return rows
    arrow = pa.table({name: c if isinstance(c, pa.Array) else pa.array(c, type=kind)
                      for name, kind in types.items() for c in (columns[name],)})
    with connection.cursor() as cursor:
        pg_types = column_types(cursor, table, tuple(types))
        # Encoded before the COPY opens, as the CSV was: while the server waits for COPY data its
        # session is active, not idle, so idle_in_transaction_session_timeout would not end the
        # transaction of a worker frozen there, and its run's lock would keep the reconciler from
        # judging it lost. Open, the COPY only sends.
        try:
            chunks = list(binary_copy_chunks(arrow, pg_types))
        except OverflowError as exc:  # an integer too large for its column
            raise DataError(str(exc)) from exc
        # psycopg's COPY, under Django's error translation as an execute() is: a refused value is a
        # django DataError and a lost connection an OperationalError (ingest answers 400 and 503).
        with connection.wrap_database_errors, cursor.cursor.copy(
                f"COPY {table} ({names}) FROM STDIN (FORMAT binary)") as copy:
            for chunk in chunks:
                copy.write(chunk)
    return rows


_COLUMN_TYPES: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def column_types(cursor: Any, table: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The Postgres types of ``table``'s columns ``names``, as binary COPY must send them: read
    from the catalog once per process (a table's types change only with a migration, and a
    deploy restarts the servers after one)."""
    key = (table, names)
    if key not in _COLUMN_TYPES:
        cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                       "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", [table])
        found = dict(cursor.fetchall())
        missing = [n for n in names if n not in found]
        if missing:
            raise IngestError(f"table {table} has no column {', '.join(missing)}: is the database migrated?")
        unsupported = [f"{n} ({found[n]})" for n in names if not supported(found[n])]
        if unsupported:
            raise CopyTypeError(f"table {table}: binary COPY writes no column of type {', '.join(unsupported)}")
        _COLUMN_TYPES[key] = tuple(found[n] for n in names)
    return _COLUMN_TYPES[key]


def scores_json(scores: Mapping[str, list[Any]], rows: int) -> pa.Array:
    """Each row's scores as JSON text, built a column at a time in Arrow: ``{"name": value, ...}``
    with the row's non-null scores (a null is a score the row has not, or did not measure)."""
    parts = []
    for name, values in scores.items():
        text = pc.cast(pa.array(values, type=pa.float64()), pa.string())  # shortest round-trip digits
        # '"name": value, ' where the row has the score, '' where not
        parts.append(pc.fill_null(pc.binary_join_element_wise(json.dumps(name) + ": ", text, ", ", ""), ""))
    if not parts:
        return pa.array(np.full(rows, "{}", dtype=object), type=pa.string())
    body = pc.utf8_rtrim(pc.binary_join_element_wise(*parts, ""), characters=", ")  # no number ends in , or space
    return pc.binary_join_element_wise("{", body, "}", "")


def _observation_columns(run_id: int, step: int, rows: ObservationRows) -> dict[str, Any]:
    n = len(rows)
    return {"run_id": _constant(run_id, n), "step": _constant(step, n),
            **{name: rows.column(name) for name in OBSERVATION_COLUMNS[2:]}}


def _decision_columns(run_id: int, step: int, rows: DecisionRows) -> dict[str, Any]:
    n = len(rows)
    columns = {"run_id": _constant(run_id, n), "step": _constant(step, n),
               **{name: rows.column(name) for name in ("prompt_key", "layer", "reason", "message")},
               # read into Arrow once, for COPY and for the step's counts
               **{name: pa.array(rows.column(name), type=pa.string()) for name in ("method", "action")}}
    scores = rows.score_columns()
    if connection.vendor == "postgresql":
        columns["scores"] = scores_json(scores, n)
    else:
        columns["scores"] = [json.dumps({k: v[i] for k, v in scores.items() if v[i] is not None}) for i in range(n)]
    return columns


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


def _control(run: Run, budget: BudgetStatus | None) -> Control:
    """What the engine is told at its next boundary (a step, or a warm-up heartbeat). ``budget``:
    the team's budget status now (``budget_now``; as a usage booking answers it), None without one."""
    if run.cancel_requested:
        return Control.CANCEL
    if budget is not None and budget.exhausted:
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
    _step_rows_delete(run.id, step)

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
    if record.alerts:
        notification_alerts_record(run=run, step=step, alerts=record.alerts)
    observations, decisions = record.rows("observations"), record.rows("decisions")
    observed = copy_columns(PromptObservation._meta.db_table, OBSERVATION_TYPES,
                            _observation_columns(run.id, step, observations))
    decision_columns = _decision_columns(run.id, step, decisions)
    decided = copy_columns(SelectionDecision._meta.db_table, DECISION_TYPES, decision_columns)
    _decision_counts_write(run.id, decision_columns, decisions.score_columns())
    ingest_rows_count(steps=1, observations=observed, decisions=decided)  # edgeplane_ingest_rows_total, on commit
    _update_prompt_states(run.id, step, observations, decisions)
    budget = usage_record(run=run, step=step, device_seconds=float(summary.device_seconds), uniform_seconds=uniform)

    Run.objects.filter(pk=run.pk).update(
        steps_completed=step + 1, heartbeat_at=Now(), status_reason="", warmup_attempt=None,
        status=RunStatus.RUNNING if run.status in (RunStatus.STARTING, RunStatus.LOST) else run.status,
    )
    return _control(run, budget)


def _decision_counts_write(run_id: int, columns: Mapping[str, Any], scores: Mapping[str, list[Any]]) -> None:
    """The step's decisions counted per (method, action, successes): StepDecisionCount's rows."""
    if not len(columns["method"]):
        return
    counts = decision_counts(columns["step"], columns["method"], columns["action"], scores.get("successes"),
                             scores.get("extra"))
    copy_columns(StepDecisionCount._meta.db_table, {"run_id": pa.int64(), **COUNT_TYPES},
                 {"run_id": _constant(run_id, counts.num_rows),
                  **{name: counts[name].combine_chunks() for name in COUNT_TYPES}})


def _step_rows_delete(run_id: int, step: int) -> None:
    """A replayed step's earlier rows, gone in one round trip (nothing to delete: a first write)."""
    tables = [m._meta.db_table for m in (StepSummary, PromptObservation, SelectionDecision, StepDecisionCount)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("WITH " + ", ".join(f"d{i} AS (DELETE FROM {t} WHERE run_id = %s AND step = %s)"
                                               for i, t in enumerate(tables[1:]))
                           + f" DELETE FROM {tables[0]} WHERE run_id = %s AND step = %s", [run_id, step] * len(tables))
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table} WHERE run_id = %s AND step = %s", [run_id, step])


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
STATE_STAGING = "edgeplane_prompt_state_in"  # a temporary table, per connection, emptied at each commit
STATE_STAGING_CREATE = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {STATE_STAGING} (run_id bigint, prompt_key text, "
                        "bucket text, pass_rate float8, response_entropy float8, prompt_entropy float8, "
                        "visits int, last_step int) ON COMMIT DELETE ROWS")


def _state_columns(run_id: int, step: int, observations: ObservationRows,
                   decisions: DecisionRows) -> dict[str, Any]:
    """The new state of every prompt the step touched: its observation, and "pruned" for a prompt
    an epoch end pruned (pruning happens at epoch ends, without an observation)."""
    keys = observations.column("prompt_key")
    buckets = observations.column("bucket")
    columns: dict[str, Any] = {"prompt_key": keys, "bucket": buckets,
                               **{n: observations.column(n) for n in ("pass_rate", "response_entropy",
                                                                      "prompt_entropy")}}
    pruned = [k for k, a in zip(decisions.column("prompt_key"), decisions.column("action"), strict=True)
              if a == "pruned"]
    visits = [1] * len(keys)
    if pruned:
        pruned_keys = set(pruned)
        columns["bucket"] = ["pruned" if k in pruned_keys else b for k, b in zip(keys, buckets, strict=True)]
        observed = set(keys)
        unobserved = [k for k in dict.fromkeys(pruned) if k not in observed]
        columns = {"prompt_key": keys + unobserved, "bucket": columns["bucket"] + ["pruned"] * len(unobserved),
                   **{n: columns[n] + [None] * len(unobserved)
                      for n in ("pass_rate", "response_entropy", "prompt_entropy")}}
        visits += [0] * len(unobserved)
    rows = len(columns["prompt_key"])
    return {"run_id": _constant(run_id, rows), **columns, "visits": visits, "last_step": _constant(step, rows)}


def _update_prompt_states(run_id: int, step: int, observations: ObservationRows, decisions: DecisionRows) -> None:
    """Upsert the current learning-edge state of every prompt this step touched: on Postgres the
    rows go in with COPY into a temporary table and one INSERT ... ON CONFLICT takes them from it."""
    columns = _state_columns(run_id, step, observations, decisions)
    if not columns["prompt_key"]:
        return
    table = PromptState._meta.db_table
    names = ", ".join(STATE_COLUMNS)
    conflict = _STATE_CONFLICT.format(t=table)
    if connection.vendor != "postgresql":
        marks = ", ".join(["%s"] * len(STATE_COLUMNS))
        values = [c.to_pylist() if isinstance(c, pa.Array) else c for c in (columns[n] for n in STATE_COLUMNS)]
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})" + conflict,
                               list(zip(*values, strict=True)))
        return
    with connection.cursor() as cursor:
        # Every time, not once per session: a rolled-back transaction takes its CREATE with it, and
        # nothing tells a pooled connection so. When the table is there this is a no-op (a notice).
        cursor.execute(STATE_STAGING_CREATE)
    copy_columns(STATE_STAGING, STATE_TYPES, columns)
    with connection.cursor() as cursor:
        cursor.execute(state_upsert_sql(table))


def state_upsert_sql(table: str) -> str:
    """The statement that moves the staged states into ``table`` (PromptState's; bench/state_upsert.py
    times it on a copy). Moved, not copied: a second step in the same transaction starts empty."""
    names = ", ".join(STATE_COLUMNS)
    return (f"WITH staged AS (DELETE FROM {STATE_STAGING} RETURNING {names}) "
            f"INSERT INTO {table} ({names}) SELECT {names} FROM staged" + _STATE_CONFLICT.format(t=table))


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
        return _control(run, budget_now(run.team_id))  # lost, requeued or ended meanwhile: nothing to keep alive
    budget = usage_add_warmup(run=run, device_seconds=device_seconds) if device_seconds else budget_now(run.team_id)
    progress = {} if warmup_steps is None else {
        "warmup_step": warmup_step, "warmup_steps": warmup_steps,
        "warmup_attempt": attempt if attempt is not None else run.attempts_count}
    Run.objects.filter(pk=run_id).update(heartbeat_at=Now(), status_reason=detail[:500], **progress)
    return _control(run, budget)


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
