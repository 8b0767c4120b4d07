"""The decisions counted per step (``StepDecisionCount``), which the decisions-per-step and HORA
charts read: after any sequence of first writes, replays and a resume they equal a GROUP BY over
the decision rows themselves (SQL on the stored JSON scores, not the Arrow code that wrote them),
and the charts' readers answer what they answered from the decision rows. The migration that
adds the table counts the steps recorded before it, an archived run's from its Parquet file."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, F, FloatField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_claim, run_create, run_resume
from controlplane.telemetry.models import SelectionDecision, StepDecisionCount
from controlplane.telemetry.retention import run_telemetry_archive
from controlplane.telemetry.services import checkpoint_ingest, run_finished_ingest, step_ingest
from frontend import selectors as sel
from tests.controlplane.test_telemetry_tables_move import latest, migrate
from tests.frontend.helpers import CONFIG, step_record

KEYS = [f"edgeplane/add:{i}" for i in range(4, 10)]
ACTIONS = {"hive": ["kept", "skipped"], "hora": ["allocated"], "rlzvp": ["shaped"], "lze": ["selected", "pruned"]}


@pytest.fixture(autouse=True)
def _fast(fast_passwords, enqueued) -> None:
    """Cheap passwords; launches recorded, not sent."""


@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")


def new_run(acme, dataset, steps: int = 20) -> Run:
    bob = get_user_model().objects.get(username="bob")
    run = run_create(team=acme, dataset=dataset, name="counted", config={**CONFIG, "steps": steps}, user=bob)
    run_claim(run_id=run.id, worker="test:1")
    return run


def random_record(rng: random.Random, step: int) -> dict:
    """A step whose decisions draw method, action and scores at random: a successes score that is
    there or not, whole or not, an extra that is there or not, and now and then no decision at all."""
    record = step_record(step, KEYS[:4], skipped=KEYS[4:])
    decisions = []
    for _ in range(rng.choice([0, 1, 7, 40])):
        method = rng.choice(list(ACTIONS))
        scores = {"rank": rng.random()}
        if rng.random() < 0.7:
            scores["successes"] = rng.choice([0, 1, 2, 3, 1.5])
        if rng.random() < 0.6:
            scores["extra"] = rng.choice([0, 1, 2, 6, 0.25])
        decisions.append({"step": step, "prompt_key": rng.choice(KEYS), "layer": "allocation", "method": method,
                          "action": rng.choice(ACTIONS[method]), "reason": f"{method}.test", "scores": scores,
                          "message": "drawn by the test"})
    record["decisions"] = decisions
    return record


def stored(run: Run) -> list[tuple]:
    return sorted(StepDecisionCount.objects.filter(run=run).values_list(
        "step", "method", "action", "successes", "decisions", "extra"), key=repr)


def reference(run: Run) -> list[tuple]:
    """The counts computed by the database from the decision rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT step, method, action, (scores->>'successes')::float8, COUNT(*), "
            "COALESCE(SUM((scores->>'extra')::float8), 0) FROM runs_selectiondecision WHERE run_id = %s "
            "GROUP BY step, method, action, (scores->>'successes')::float8", [run.id])
        return sorted(cursor.fetchall(), key=repr)


def action_counts_from_rows(run: Run, after: int, upto: int) -> list[tuple]:
    """What the decisions chart read before the counts: a GROUP BY over the decision rows."""
    rows = (SelectionDecision.objects.filter(run=run, step__gt=after, step__lte=upto)
            .values_list("step", "method", "action").annotate(n=Count("*")).order_by("step", "method", "action"))
    return list(rows)


def hora_from_rows(run: Run, after: int, upto: int, w: int) -> list[tuple]:
    """What the HORA chart read before the counts."""
    decisions = SelectionDecision.objects.filter(run=run, method="hora", action="allocated", step__gt=after,
                                                 step__lte=upto)
    rows = (decisions.annotate(column=F("step") / w * w, successes=Cast(KT("scores__successes"), FloatField()))
            .values_list("column", "successes")
            .annotate(n=Count("id"), extra=Sum(Cast(KT("scores__extra"), FloatField()))))
    return sorted(((int(s), int(h or 0), int(n), float(e or 0.0)) for s, h, n, e in rows), key=repr)


def assert_readers_match(run: Run, last: int) -> None:
    for after, upto in [(-1, last), (1, last - 2), (3, 3)]:
        assert sorted(sel.action_count_rows(run, after, upto)) == action_counts_from_rows(run, after, upto)
        for width in (1, 3):
            assert sorted(sel.hora_rows(run, after, upto, steps_per_column=width), key=repr) == \
                hora_from_rows(run, after, upto, width), (after, upto, width)


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(4))
def test_counts_equal_the_rows_through_replays_and_a_resume(acme, dataset, seed):
    rng = random.Random(seed)
    run = new_run(acme, dataset)
    for step in range(8):
        step_ingest(run_id=run.id, record=random_record(rng, step))
    assert stored(run) == reference(run) and stored(run)
    assert_readers_match(run, 7)

    for step in (3, 6, 3, 7):  # replayed steps (an older one after newer ones too) replace their counts
        step_ingest(run_id=run.id, record=random_record(rng, step))
        assert stored(run) == reference(run), step
    assert_readers_match(run, 7)

    checkpoint_ingest(run_id=run.id, step=5, attempt=1)
    run_finished_ingest(run_id=run.id, status=RunStatus.CANCELLED, reason="test", attempt=1)
    run_resume(run=Run.objects.get(pk=run.pk), user=None)
    assert not StepDecisionCount.objects.filter(run=run, step__gte=5).exists()
    assert stored(run) == reference(run)
    run_claim(run_id=run.id, worker="test:2")
    for step in range(5, 10):
        step_ingest(run_id=run.id, record=random_record(rng, step), attempt=2)
    assert stored(run) == reference(run)
    assert_readers_match(run, 9)


@pytest.mark.django_db
def test_an_epoch_end_of_many_decisions_is_a_few_counts(acme, dataset):
    """The counts are a few rows a step however many decisions it made (the charts' point)."""
    run = new_run(acme, dataset)
    record = step_record(0, KEYS[:4])
    record["decisions"] = [
        {"step": 0, "prompt_key": f"p{i}", "layer": "post_rollout", "method": "lze",
         "action": "pruned" if i % 10 else "replayed", "reason": "lze.test", "scores": {"energy": 0.0},
         "message": "pruned"} for i in range(20_000)]
    step_ingest(run_id=run.id, record=record)
    assert stored(run) == [(0, "lze", "pruned", None, 18_000, 0.0), (0, "lze", "replayed", None, 2_000, 0.0)]


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_steps_recorded_before_it(acme, dataset, settings, tmp_path):
    settings.EDGEPLANE_ARCHIVE_DIR = tmp_path / "archive"
    rng = random.Random(7)
    live, archived = new_run(acme, dataset), new_run(acme, dataset)
    for run in (live, archived):
        for step in range(5):
            step_ingest(run_id=run.id, record=random_record(rng, step))
    run_finished_ingest(run_id=archived.id, status=RunStatus.SUCCEEDED, reason="test", attempt=1)
    Run.objects.filter(pk=archived.pk).update(finished_at=timezone.now() - dt.timedelta(days=60))
    before = {run.id: stored(run) for run in (live, archived)}
    assert before[live.id] and before[archived.id]
    assert before[live.id] == reference(live) and before[archived.id] == reference(archived)
    run_telemetry_archive(archived.id)
    assert not SelectionDecision.objects.filter(run=archived).exists()
    try:
        migrate([("telemetry", "0005_prompt_state_recent_index")])  # the table goes, with its rows
        migrate(latest())  # and comes back, counted from the decision rows and the archive
        assert {run.id: stored(run) for run in (live, archived)} == before
    finally:
        migrate(latest())
