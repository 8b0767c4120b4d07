"""The ingest endpoint against a hostile or broken engine: every number checked for its field,
the usage ledger unbendable, every event kind fenced off a replaced attempt, one row per prompt
a step, and a database that fails for a moment answered 503 (retry), never 400 (drop)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from controlplane.budgets.models import UsageEntry
from controlplane.budgets.services import usage_record
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_lose
from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    RunToken,
    SelectionDecision,
    StepDecisionCount,
    StepSummary,
)
from controlplane.telemetry.services import run_finished_ingest
from tests.conftest import database_url_of
from tests.controlplane.api.helpers import TINY_CONFIG, budget_for, engine, step_record, steps_url


def nothing_stored(run) -> bool:
    return not (StepSummary.objects.filter(run=run).exists() or PromptObservation.objects.filter(run=run).exists()
                or SelectionDecision.objects.filter(run=run).exists() or UsageEntry.objects.filter(run=run).exists()
                or PromptState.objects.filter(run=run).exists() or Evaluation.objects.filter(run=run).exists())


# -- 1. every number is checked for its field ---------------------------------------------------------
def raw_json(body) -> str:
    """``body`` as an engine could send it: an infinity as 1e999 (which JSON readers take as
    infinite), a lone surrogate as its escape."""
    return json.dumps(body, allow_nan=True).replace("-Infinity", "-1e999").replace("Infinity", "1e999")


def _set(record: dict, path: str, value) -> dict:
    """``record`` with the field at ``path`` (dots; list indexes as numbers) set to ``value``."""
    record = copy.deepcopy(record)
    *parents, last = path.split(".")
    target = record
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return record


BIG = 2**31  # beyond a 32-bit integer column
STEP_CASES = [
    # (field path, bad value, what the 400 must name)
    ("step", BIG, "step"),
    ("step", 10**30, "step"),
    ("step", 1.5, "step"),
    ("step", "3", "step"),
    ("epoch", -1, "epoch"),
    ("summary.rollouts_generated", BIG, "rollouts_generated"),
    ("summary.rollouts_generated", -4, "rollouts_generated"),
    ("summary.rollouts_generated", [4], "rollouts_generated"),
    ("summary.groups_trained", 1e30, "groups_trained"),
    ("summary.tokens_generated", 2**64, "tokens_generated"),
    ("summary.device_seconds", -5.0, "device_seconds"),
    ("summary.device_seconds", "NaN", "device_seconds"),
    ("summary.device_seconds", "Infinity", "device_seconds"),
    ("summary.device_seconds", 1e30, "device_seconds"),
    ("summary.device_seconds", 1e999, "device_seconds"),  # json reads it as inf
    ("summary.flops_estimate", 1e300, "flops_estimate"),
    ("summary.flops_estimate", -1.0, "flops_estimate"),
    ("summary.rollout_savings", 1.5, "rollout_savings"),
    ("summary.effective_share_of_generated", 1.01, "effective_share_of_generated"),
    ("summary.mixed_rate_uniform", -0.1, "mixed_rate_uniform"),
    ("summary.seconds.generate", -1.0, "seconds"),
    ("summary.seconds.generate", 1e30, "seconds"),
    ("summary.metrics.selection/candidates_drawn", "NaN", "metrics"),
    ("summary.train.clip_fraction", 2.0, "clip_fraction"),
    ("summary.train.grad_norm", -1.0, "grad_norm"),
    ("summary.train.reward_mean", "Infinity", "reward_mean"),
    ("summary.train.device_seconds_total", -3.0, "device_seconds_total"),
    ("observations.0.group_size", BIG, "group_size"),
    ("observations.0.response_tokens", BIG, "response_tokens"),
    ("observations.0.pass_rate", 1.5, "pass_rate"),
    ("observations.0.response_entropy", "NaN", "response_entropy"),
    ("observations.0.prompt_key", "k" * 256, "prompt_key"),
    ("observations.0.prompt_key", "", "prompt_key"),
    ("observations.0.prompt_key", "k\x00", "prompt_key"),
    ("observations.0.prompt_key", "k\ud800", "prompt_key"),
    ("decisions.0.step", BIG, "step"),
    ("decisions.0.method", "m" * 17, "method"),
    ("decisions.0.reason", "r" * 49, "reason"),
    ("decisions.0.scores.x", 1e999, "scores"),
    ("decisions.0.message", "m\x00", "message"),
    ("alerts", ["a\x00"], "alerts"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "value", "named"), STEP_CASES, ids=[f"{p}={v!r:.20}" for p, v, _ in STEP_CASES])
def test_a_step_number_out_of_its_fields_range_is_a_400_naming_the_field(running, token, path, value, named):
    record = _set(step_record(0, ["k0", "k1"], version=2), path, value)  # paths into rows
    answer = engine(token).post(steps_url(running), raw_json(record), content_type="application/json")
    assert answer.status_code == 400, answer.content
    assert named in answer.json()["detail"], answer.json()
    assert nothing_stored(running)


OTHER_CASES = [
    ({"event": "evaluation", "step": BIG, "k": 4, "pass_at_1": 0.5, "pass_at_k": 0.7, "prompts": 8}, "step"),
    ({"event": "evaluation", "step": 1, "k": BIG, "pass_at_1": 0.5, "pass_at_k": 0.7, "prompts": 8}, "k"),
    ({"event": "evaluation", "step": 1, "k": 4, "pass_at_1": 1.5, "pass_at_k": 0.7, "prompts": 8}, "pass_at_1"),
    ({"event": "evaluation", "step": 1, "k": 4, "pass_at_1": 0.5, "pass_at_k": "NaN", "prompts": 8}, "pass_at_k"),
    ({"event": "evaluation", "step": 1, "k": 4, "pass_at_1": 0.5, "pass_at_k": 0.7, "prompts": -1}, "prompts"),
    ({"event": "evaluation", "step": 1, "k": 4, "pass_at_1": 0.5, "pass_at_k": 0.7, "prompts": 8,
      "by_difficulty": {"1": {"a": "x\x00"}}}, "by_difficulty"),
    ({"event": "checkpoint", "step": BIG}, "step"),
    ({"event": "checkpoint", "step": 1, "path": "p" * 5000}, "path"),
    ({"event": "run_started", "resumed_from_step": BIG}, "resumed_from_step"),
    ({"event": "run_started", "resumed_from_step": "NaN"}, "resumed_from_step"),
    ({"event": "heartbeat", "phase": "warmup", "detail": "x", "device_seconds": -1.0}, "device_seconds"),
    ({"event": "heartbeat", "phase": "warmup", "detail": "x", "device_seconds": "NaN"}, "device_seconds"),
    ({"event": "heartbeat", "phase": "warmup", "detail": "x", "device_seconds": 1e30}, "device_seconds"),
    ({"event": "heartbeat", "phase": "step", "detail": "x", "device_seconds": 2.0}, "device_seconds"),
    ({"event": "run_finished", "status": "failed", "reason": "r" * 5000}, "reason"),
    ({"event": "run_finished", "status": "failed", "reason": "r\x00"}, "reason"),
    ({"event": "heartbeat", "phase": "warmup", "detail": "x", "attempt": 2**40}, "attempt"),
    ({"event": "heartbeat", "phase": "warmup", "detail": "x", "attempt": 0}, "attempt"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "named"), OTHER_CASES, ids=[f"{b['event']}-{n}-{i}" for i, (b, n)
                                                               in enumerate(OTHER_CASES)])
def test_other_events_out_of_range_are_a_400_naming_the_field(running, token, body, named):
    before = Run.objects.values().get(pk=running.pk)
    answer = engine(token).post(steps_url(running), body, format="json")
    assert answer.status_code == 400, answer.content
    assert named in answer.json()["detail"], answer.json()
    assert Run.objects.values().get(pk=running.pk) == before
    assert nothing_stored(running)


@pytest.mark.django_db
def test_a_deeply_nested_body_is_a_400(running, token):
    body = '{"event": "evaluation", "by_difficulty": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = engine(token).post(steps_url(running), body, content_type="application/json")
    assert answer.status_code == 400, answer.content


# -- 2. the ledger cannot be bent --------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("device_seconds", [-3600.0, "NaN", "-Infinity", 1e30])
def test_a_run_token_cannot_book_negative_or_nan_usage_nor_let_a_refused_launch_through(
        running, token, team_a, dataset_a, bob, device_seconds):
    budget_for(team_a, limit_device_hours=0.01)  # 36 device-seconds
    client = engine(token)
    answer = client.post(steps_url(running), step_record(0, ["k0"], device_seconds=30.0), format="json")
    assert answer.status_code == 200
    budget = bob.get(f"/api/teams/{team_a.slug}/budget/")
    assert budget.status_code == 200
    before = budget.json()

    bent = _set(step_record(1, ["k0"]), "summary.device_seconds", device_seconds)
    answer = client.post(steps_url(running), bent, format="json")
    assert answer.status_code == 400 and "device_seconds" in answer.json()["detail"]

    after = bob.get(f"/api/teams/{team_a.slug}/budget/")
    assert after.status_code == 200
    drifting = "forecast_device_hours"  # extrapolated over the time elapsed: moves by itself
    assert {k: v for k, v in after.json().items() if k != drifting} == {
        k: v for k, v in before.items() if k != drifting}
    page = Client()
    page.force_login(get_user_model().objects.get(username="bob"))
    assert page.get(f"/teams/{team_a.slug}/budget/").status_code == 200
    # 30 of 36 seconds used: a run forecast to need more than the rest is still refused.
    launch = bob.post("/api/runs/", {"team": team_a.slug, "dataset": dataset_a.id, "name": "too big",
                                     "config": {**TINY_CONFIG, "steps": 100000}}, format="json")
    assert launch.status_code == 409, launch.content


@pytest.mark.django_db
@pytest.mark.parametrize("device_seconds", [-1.0, float("nan"), float("inf"), float("-inf")])
def test_the_ledger_itself_refuses_what_is_not_a_device_time(running, device_seconds):
    with pytest.raises(ValueError, match="device_seconds"):
        usage_record(run=running, step=0, device_seconds=device_seconds, uniform_seconds=1.0)
    with pytest.raises(ValueError, match="uniform_seconds"):
        usage_record(run=running, step=0, device_seconds=1.0, uniform_seconds=device_seconds)
    assert not UsageEntry.objects.filter(run=running).exists()


# -- 3. every event kind is fenced -------------------------------------------------------------------
FENCED = {
    "step": lambda: step_record(0, ["k0"]),
    "run_started": lambda: {"event": "run_started", "resumed_from_step": None},
    "checkpoint": lambda: {"event": "checkpoint", "step": 0, "path": "/ckpt/0"},
    "evaluation": lambda: {"event": "evaluation", "step": 0, "k": 2, "pass_at_1": 0.5, "pass_at_k": 0.75,
                           "prompts": 4},
    "heartbeat": lambda: {"event": "heartbeat", "phase": "warmup", "detail": "zombie", "device_seconds": 5.0},
    "run_finished": lambda: {"event": "run_finished", "status": "failed", "reason": "zombie"},
}


@pytest.mark.django_db
@pytest.mark.parametrize("event", list(FENCED))
def test_a_replaced_attempt_can_post_no_event_of_any_kind(running, token, event):
    Run.objects.filter(pk=running.pk).update(attempts_count=2)  # the reconciler started attempt 2
    before = Run.objects.values().get(pk=running.pk)
    answer = engine(token).post(steps_url(running), {**FENCED[event](), "attempt": 1}, format="json")
    assert answer.status_code == 400, answer.content
    assert "replaced by attempt 2" in answer.json()["detail"] and answer.json()["code"] == "attempt_replaced"
    assert Run.objects.values().get(pk=running.pk) == before
    assert nothing_stored(running)
    # the current attempt posts the same event
    current = engine(token).post(steps_url(running), {**FENCED[event](), "attempt": 2}, format="json")
    assert current.status_code == 200, current.content


@pytest.mark.django_db
@pytest.mark.parametrize("event", list(FENCED))
def test_an_attempt_whose_run_was_requeued_before_a_new_claim_can_post_nothing(running, token, event):
    """Judged lost and requeued: the attempt number is still the run's (no new attempt has claimed
    it yet), but the run is not running it. A late event must neither revive nor end the run."""
    outcome: dict[str, list[int]] = {"requeued": [], "failed": []}
    run_lose(run_id=running.pk, now=timezone.now() + dt.timedelta(hours=1), reason="test: stale", outcome=outcome)
    assert outcome["requeued"] == [running.pk]
    before = Run.objects.values().get(pk=running.pk)
    answer = engine(token).post(steps_url(running), {**FENCED[event](), "attempt": 1}, format="json")
    assert answer.status_code == 400, answer.content
    assert "no longer runs it" in answer.json()["detail"] and answer.json()["code"] == "attempt_replaced"
    assert Run.objects.values().get(pk=running.pk) == before and before["status"] == RunStatus.QUEUED
    assert nothing_stored(running)


@pytest.mark.django_db
def test_the_same_end_reported_twice_is_answered_quietly(running, token):
    """A sink whose first answer was lost sends run_finished again: the end stays as stored."""
    end = {"event": "run_finished", "status": "succeeded", "reason": "", "attempt": 1}
    assert engine(token).post(steps_url(running), end, format="json").status_code == 200
    finished_at = Run.objects.get(pk=running.pk).finished_at
    # The token ended with the run; the worker's in-process sink reports the same end again.
    run_finished_ingest(run_id=running.pk, status="succeeded", reason="", attempt=1)
    run = Run.objects.get(pk=running.pk)
    assert run.status == RunStatus.SUCCEEDED and run.finished_at == finished_at


# -- 4. the same prompt ten times in one step --------------------------------------------------------
@pytest.mark.django_db
def test_the_same_prompt_observed_ten_times_in_a_step_is_refused_naming_it(running, token):
    record = step_record(0, ["k0", "k1"], version=2)
    record["observations"] = [record["observations"][0]] * 10 + [record["observations"][1]]
    answer = engine(token).post(steps_url(running), record, format="json")
    assert answer.status_code == 400
    assert "'k0'" in answer.json()["detail"] and "observed 10 times" in answer.json()["detail"]
    assert nothing_stored(running)


@pytest.mark.django_db
def test_the_same_decision_ten_times_in_a_step_is_refused_naming_it(running, token):
    record = step_record(0, ["k0", "k1"], version=2)
    decision = record["decisions"][0]
    # the same act ten times; the scores and message may differ (a prompt drawn again)
    record["decisions"] = [{**decision, "scores": {"draw": i / 10}} for i in range(10)] + record["decisions"][1:]
    answer = engine(token).post(steps_url(running), record, format="json")
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "'k0'" in detail and "greso" in detail and "10 times" in detail
    assert nothing_stored(running)


@pytest.mark.django_db
def test_a_decision_of_another_step_in_a_step_record_is_refused(running, token):
    record = _set(step_record(3, ["k0"], version=2), "decisions.0.step", 2)
    answer = engine(token).post(steps_url(running), record, format="json")
    assert answer.status_code == 400 and "step" in answer.json()["detail"]


@pytest.mark.django_db
def test_a_prompt_state_counts_one_visit_per_step(running, token):
    client = engine(token)
    for step in (0, 1):
        assert client.post(steps_url(running), step_record(step, ["k0", "k1"]), format="json").status_code == 200
    assert PromptState.objects.get(run=running, prompt_key="k0").visits == 2
    assert PromptObservation.objects.filter(run=running, prompt_key="k0").count() == 2


# -- 5. a database that fails for a moment -----------------------------------------------------------
@pytest.fixture
def locker(transactional_db):
    """Another session on the test database, to hold locks the server's session waits on."""
    if connection.vendor != "postgresql":
        pytest.skip("needs Postgres")
    with psycopg.connect(database_url_of(connection.settings_dict), autocommit=True) as other:
        yield other


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("table", [StepSummary._meta.db_table, RunToken._meta.db_table],
                         ids=["while-storing", "while-checking-the-token"])
def test_a_lock_timeout_during_ingest_is_a_503_with_retry_after_and_the_retry_lands_once(running, token, locker,
                                                                                          table):
    client = engine(token)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        with locker.transaction():
            locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            answer = client.post(steps_url(running), step_record(0, ["k0", "k1"]), format="json")
        assert answer.status_code == 503, answer.content
        assert int(answer["Retry-After"]) >= 1
        assert "try again" in answer.json()["detail"]
        assert nothing_stored(running)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    again = client.post(steps_url(running), step_record(0, ["k0", "k1"]), format="json")
    assert again.status_code == 200
    assert StepSummary.objects.filter(run=running).count() == 1
    assert PromptObservation.objects.filter(run=running).count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("table", [PromptObservation._meta.db_table, SelectionDecision._meta.db_table,
                                   StepDecisionCount._meta.db_table], ids=["observations", "decisions", "counts"])
def test_a_database_failure_inside_a_copy_is_a_503_and_the_retry_lands_once(running, token, locker, table):
    """The bulk rows go in by COPY (psycopg's own call, not an execute()): a failure inside it is
    answered as one inside any statement, 503 and retry, not a 500. An insert trigger makes the
    COPY wait on a lock another session holds, until the lock timeout."""
    client = engine(token)
    with connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION edgeplane_test_wait() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN PERFORM pg_advisory_xact_lock(4216); RETURN NEW; END $$")
        cursor.execute(f"CREATE TRIGGER edgeplane_test_wait BEFORE INSERT ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION edgeplane_test_wait()")
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        with locker.transaction():
            locker.execute("SELECT pg_advisory_xact_lock(4216)")
            answer = client.post(steps_url(running), step_record(0, ["k0", "k1"]), format="json")
        assert answer.status_code == 503, answer.content
        assert answer.has_header("Retry-After") and "try again" in answer.json()["detail"]
        assert nothing_stored(running)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
            cursor.execute(f"DROP TRIGGER edgeplane_test_wait ON {table}")
            cursor.execute("DROP FUNCTION edgeplane_test_wait()")
    again = client.post(steps_url(running), step_record(0, ["k0", "k1"]), format="json")
    assert again.status_code == 200
    assert StepSummary.objects.filter(run=running).count() == 1
    assert PromptObservation.objects.filter(run=running).count() == 2
    assert StepDecisionCount.objects.filter(run=running).exists()


@pytest.mark.django_db(transaction=True)
def test_a_dropped_database_connection_during_ingest_is_a_503_and_then_heals(running, token, locker):
    client = engine(token)
    stop = threading.Event()

    def kill_the_waiting_session() -> None:
        # the ingest blocks on the lock below; end its database session from outside
        while not stop.is_set():
            rows = locker.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchall()
            for (pid,) in rows:
                locker.execute("SELECT pg_terminate_backend(%s)", [pid])
                return
            time.sleep(0.05)

    with psycopg.connect(database_url_of(connection.settings_dict)) as holder:
        holder.execute(f"LOCK TABLE {StepSummary._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        killer = threading.Thread(target=kill_the_waiting_session)
        killer.start()
        try:
            answer = client.post(steps_url(running), step_record(0, ["k0"]), format="json")
        finally:
            stop.set()
            killer.join()
        holder.rollback()
    assert answer.status_code == 503, answer.content
    assert answer.has_header("Retry-After")
    connection.close()  # as Django does at the end of a request whose connection broke
    again = client.post(steps_url(running), step_record(0, ["k0"]), format="json")
    assert again.status_code == 200
    assert StepSummary.objects.filter(run=running).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("between", ["DISCARD TEMP", "DISCARD ALL", "ROLLBACK"],
                         ids=["temp-discarded", "session-reset-by-a-pooler", "nothing"])
def test_the_prompt_state_staging_table_is_there_for_every_step_whatever_the_session_did_between(
        running, token, between):
    """The prompt states go in through a temporary table; a session that lost its temporary
    objects between two steps (what a pooler's reset does) still stores the next step whole."""
    if connection.vendor != "postgresql":
        pytest.skip("the staging table is Postgres's")
    client = engine(token)
    assert client.post(steps_url(running), step_record(0, ["k0", "k1"]), format="json").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(between)
    assert client.post(steps_url(running), step_record(1, ["k0", "k2"]), format="json").status_code == 200
    assert StepSummary.objects.filter(run=running).count() == 2
    assert sorted(PromptState.objects.filter(run=running).values_list("prompt_key", "visits", "last_step")) == [
        ("k0", 2, 1), ("k1", 1, 0), ("k2", 1, 1)]
