"""Retention of per-prompt telemetry: finished runs past their team's retention have their
observations and decisions exported to Parquet and removed from the database; the readers
(prompt page, audit trail, API) answer the same from the files."""

from __future__ import annotations

import datetime as dt
import itertools

import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from controlplane.accounts.services import (
    TeamSettingInvalid,
    retention_days_checked,
    team_create,
    team_set_telemetry_retention,
)
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import RunStateError, run_claim, run_create, run_resume
from controlplane.telemetry import archive, retention
from controlplane.telemetry.models import Evaluation, PromptObservation, PromptState, SelectionDecision, StepSummary
from controlplane.telemetry.retention import (
    ArchiveRefused,
    retention_apply,
    run_telemetry_archive,
    runs_due_for_archive,
)
from controlplane.telemetry.services import evaluation_ingest, step_ingest
from frontend import selectors as sel
from tests.frontend.helpers import CONFIG, step_record

KEYS = [f"edgeplane/add:{i}" for i in range(4, 10)]
OBS_FIELDS = [f.name for f in archive.OBSERVATION_SCHEMA]
DEC_FIELDS = [f.name for f in archive.DECISION_SCHEMA]


@pytest.fixture(autouse=True)
def _archive_dir(settings, tmp_path, enqueued):
    settings.EDGEPLANE_ARCHIVE_DIR = tmp_path / "archive"


def _run(
    team,
    dataset,
    name: str,
    *,
    steps: int = 6,
    finished_days_ago: float | None = 40.0,
    status: str = RunStatus.SUCCEEDED,
) -> Run:
    """A HIVE + HORA + RL-ZVP + LZE run that trained ``steps`` steps through the real ingestion,
    then (unless ``finished_days_ago`` is None) finished that long ago with ``status``."""
    user = get_user_model().objects.filter(memberships__team=team).first()
    run = run_create(team=team, dataset=dataset, name=name, config=dict(CONFIG), user=user)
    run_claim(run_id=run.id, worker="test:1")
    for step in range(steps):
        keys = KEYS[:4] if step % 2 == 0 else KEYS[1:5]
        step_ingest(run_id=run.id, record=step_record(step, keys, skipped=[k for k in KEYS if k not in keys]))
        if step % 2 == 0:
            evaluation_ingest(
                run_id=run.id, record={"step": step, "k": 4, "pass_at_1": 0.1, "pass_at_k": 0.3, "prompts": 4}
            )
    if finished_days_ago is not None:
        Run.objects.filter(pk=run.pk).update(
            status=status, last_checkpoint_step=2, finished_at=timezone.now() - dt.timedelta(days=finished_days_ago)
        )
    return Run.objects.get(pk=run.pk)


@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")


@pytest.fixture
def old_run(acme, dataset):
    team_set_telemetry_retention(team=acme, days=30)
    return _run(acme, dataset, "old")


def _db_rows(model, run, fields):
    return [tuple(r) for r in model.objects.filter(run=run).order_by("prompt_key", "step", "id").values_list(*fields)]


def _file_rows(run, table):
    rows = pq.read_table(archive.archive_dir(run.telemetry_archive_path) / table.file).to_pylist()
    return [tuple(archive._decode(table, r)[f] for f in table.fields) for r in rows]


def _reads(run) -> dict:
    """Everything the readers answer about the run's per-prompt rows."""
    run = Run.objects.get(pk=run.pk)
    out: dict = {"recent": sel.recent_decisions(run)}
    for key in [*KEYS, "no-such-prompt"]:
        out[f"obs {key}"] = sel.prompt_observations(run, key)
        out[f"dec {key}"] = sel.prompt_decisions(run, key)
    pages, cursor = [], None
    while True:
        page = sel.audit_page(run, cursor=cursor, limit=7)
        pages.append((page.rows, page.next_cursor))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    out["audit"] = pages
    for filters in (
        {"prompt": KEYS[1]},
        {"method": "hive"},
        {"action": "skipped", "step_min": 1, "step_max": 3},
        {"prompt": KEYS[5], "method": "hive", "action": "skipped"},
        {"method": "none"},
    ):
        out[f"audit {filters}"] = sel.audit_page(run, limit=5, **filters)
    return out


# -- the team's setting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, days", [(None, None), ("", None), ("  ", None), (1, 1), ("30", 30), (" 365 ", 365), ("1_000", 1000)]
)
def test_the_retention_takes_whole_days_or_empty_for_forever(raw, days):
    assert retention_days_checked(raw) == days


@pytest.mark.parametrize("raw", [0, -1, "0", "-3", "1.5", 2.0, "30 days", "abc", True, 36501, [30]])
def test_the_retention_refuses_anything_but_whole_days_of_one_or_more(raw):
    with pytest.raises(TeamSettingInvalid, match="whole number of days, 1 or more"):
        retention_days_checked(raw)


@pytest.mark.django_db
def test_setting_the_retention_stores_it_and_empty_clears_it(acme):
    team_set_telemetry_retention(team=acme, days="14")
    acme.refresh_from_db()
    assert acme.telemetry_retention_days == 14
    team_set_telemetry_retention(team=acme, days="")
    acme.refresh_from_db()
    assert acme.telemetry_retention_days is None


# -- archiving ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_archiving_moves_the_rows_to_parquet_and_out_of_the_database(old_run):
    observations = _db_rows(PromptObservation, old_run, OBS_FIELDS)
    decisions = _db_rows(SelectionDecision, old_run, DEC_FIELDS)
    kept = (
        StepSummary.objects.filter(run=old_run).count(),
        Evaluation.objects.filter(run=old_run).count(),
        PromptState.objects.filter(run=old_run).count(),
    )
    assert len(observations) > 10 and len(decisions) > 10

    outcome = run_telemetry_archive(old_run.pk)

    run = Run.objects.get(pk=old_run.pk)
    assert run.telemetry_archived_at is not None and run.telemetry_archive_path == f"acme/{run.pk}"
    assert outcome.status == "archived" and (outcome.observations, outcome.decisions) == (
        len(observations),
        len(decisions),
    )
    assert outcome.bytes > 0 and outcome.reused == []
    assert not PromptObservation.objects.filter(run=run).exists()
    assert not SelectionDecision.objects.filter(run=run).exists()
    assert (
        StepSummary.objects.filter(run=run).count(),
        Evaluation.objects.filter(run=run).count(),
        PromptState.objects.filter(run=run).count(),
    ) == kept  # the run page's charts keep their rows
    # The files hold exactly the rows, sorted by (prompt_key, step, id).
    assert _file_rows(run, archive.OBSERVATIONS) == sorted(observations, key=lambda r: (r[2], r[1], r[0]))
    assert _file_rows(run, archive.DECISIONS) == sorted(decisions, key=lambda r: (r[2], r[1], r[0]))
    folder = archive.archive_dir(run.telemetry_archive_path)
    assert sorted(p.name for p in folder.iterdir()) == ["decisions.parquet", "observations.parquet"]  # no temp left


@pytest.mark.django_db
def test_the_readers_answer_the_same_before_and_after_archiving(old_run):
    before = _reads(old_run)
    assert any(before[f"dec {k}"] for k in KEYS) and before["audit"][0][1] is not None  # more than one page
    run_telemetry_archive(old_run.pk)
    after = _reads(old_run)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], name


@pytest.mark.django_db
def test_archiving_twice_changes_nothing_the_second_time(old_run):
    first = run_telemetry_archive(old_run.pk)
    archived_at = Run.objects.get(pk=old_run.pk).telemetry_archived_at
    second = run_telemetry_archive(old_run.pk)
    assert second.status == "already archived" and second.bytes == first.bytes
    assert Run.objects.get(pk=old_run.pk).telemetry_archived_at == archived_at


@pytest.mark.django_db
@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.LOST])
def test_a_run_that_is_not_finished_is_never_archived(acme, dataset, status):
    team_set_telemetry_retention(team=acme, days=1)
    run = _run(acme, dataset, "live", finished_days_ago=None)
    Run.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now() - dt.timedelta(days=90))
    rows = PromptObservation.objects.filter(run=run).count()
    assert list(runs_due_for_archive()) == []
    assert retention_apply() == []
    with pytest.raises(ArchiveRefused, match="only a finished run"):
        run_telemetry_archive(run.pk)
    run.refresh_from_db()
    assert run.telemetry_archive_path == "" and run.telemetry_archived_at is None
    assert PromptObservation.objects.filter(run=run).count() == rows > 0


@pytest.mark.django_db
def test_only_runs_older_than_their_own_teams_retention_are_archived(acme, dataset):
    other = team_create(name="Other", owner_username="olga")
    forever = team_create(name="Forever", owner_username="fred")
    other_ds = dataset_import_builtin(team=other, task="add", n_train=12, n_test=4, name="add-o")
    forever_ds = dataset_import_builtin(team=forever, task="add", n_train=12, n_test=4, name="add-f")
    team_set_telemetry_retention(team=acme, days=30)
    team_set_telemetry_retention(team=other, days=7)
    runs = {
        "acme old": _run(acme, dataset, "a", steps=2, finished_days_ago=31),
        "acme young": _run(acme, dataset, "b", steps=2, finished_days_ago=29),
        "other old": _run(other, other_ds, "c", steps=2, finished_days_ago=8),
        "other young": _run(other, other_ds, "d", steps=2, finished_days_ago=6),
        "forever": _run(forever, forever_ds, "e", steps=2, finished_days_ago=3000),
        "acme cancelled": _run(acme, dataset, "f", steps=2, finished_days_ago=45, status=RunStatus.CANCELLED),
    }
    due = {r.pk for r in runs_due_for_archive()}
    assert due == {runs[n].pk for n in ("acme old", "other old", "acme cancelled")}

    outcomes = retention_apply()

    assert {o.run for o in outcomes} == due and all(o.status == "archived" for o in outcomes)
    for name, run in runs.items():
        run.refresh_from_db()
        assert (run.telemetry_archived_at is not None) == (run.pk in due), name
        assert SelectionDecision.objects.filter(run=run).exists() == (run.pk not in due), name
    assert retention_apply() == []  # nothing left to do


@pytest.mark.django_db
def test_a_dry_run_changes_nothing_and_says_what_it_would_archive(old_run, capsys):
    observations = PromptObservation.objects.filter(run=old_run).count()
    decisions = SelectionDecision.objects.filter(run=old_run).count()

    outcomes = retention_apply(dry_run=True)
    call_command("telemetry_retention", "--dry-run")

    assert [(o.run, o.status, o.observations, o.decisions) for o in outcomes] == [
        (old_run.pk, "would archive", observations, decisions)
    ]
    out = capsys.readouterr().out
    assert f"would archive: run {old_run.pk}" in out and f"{observations} observations, {decisions} decisions" in out
    old_run.refresh_from_db()
    assert old_run.telemetry_archive_path == "" and old_run.telemetry_archived_at is None
    assert PromptObservation.objects.filter(run=old_run).count() == observations
    assert SelectionDecision.objects.filter(run=old_run).count() == decisions
    assert not archive.archive_root().exists()


@pytest.mark.django_db
def test_the_command_archives_and_prints_runs_rows_and_bytes(old_run, capsys):
    call_command("telemetry_retention")
    out = capsys.readouterr().out
    old_run.refresh_from_db()
    size = sum(p.stat().st_size for p in archive.archive_dir(old_run.telemetry_archive_path).iterdir())
    assert old_run.telemetry_archived_at is not None
    assert f"archived: run {old_run.pk}" in out and "archived 1 run: " in out and f"{size} bytes" in out


@pytest.mark.django_db
def test_a_crash_between_export_and_delete_keeps_the_rows_and_the_next_pass_reuses_the_file(old_run, monkeypatch):
    decisions = _db_rows(SelectionDecision, old_run, DEC_FIELDS)

    def crash(run_id: int) -> None:
        raise RuntimeError("worker killed after the export")

    monkeypatch.setattr("controlplane.telemetry.partitions.run_rows_drop", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run_telemetry_archive(old_run.pk)
    old_run.refresh_from_db()
    assert old_run.telemetry_archived_at is None  # readers stay on the database
    assert _db_rows(SelectionDecision, old_run, DEC_FIELDS) == decisions
    folder = archive.archive_root() / f"acme/{old_run.pk}"
    assert (folder / "decisions.parquet").is_file()
    assert sel.prompt_decisions(old_run, KEYS[1])  # still read from the database

    monkeypatch.undo()
    outcome = run_telemetry_archive(old_run.pk)
    assert outcome.status == "archived" and sorted(outcome.reused) == ["decisions", "observations"]
    assert not SelectionDecision.objects.filter(run=old_run).exists()


@pytest.mark.django_db
def test_a_stale_or_torn_file_is_written_again_and_never_trusted(old_run, monkeypatch):
    """A file left by a crash that does not hold the database's rows (another run's, a torn
    write) is replaced; the rows are removed only once the new file matches."""
    folder = archive.archive_root() / f"acme/{old_run.pk}"
    folder.mkdir(parents=True)
    (folder / "observations.parquet").write_bytes(b"PAR1 torn")
    archive.table_write(archive.DECISIONS, [], folder / "decisions.parquet")  # an empty, well-formed file
    outcome = run_telemetry_archive(old_run.pk)
    assert outcome.reused == []
    old_run.refresh_from_db()
    assert len(_file_rows(old_run, archive.DECISIONS)) == outcome.decisions > 0


@pytest.mark.django_db
def test_rows_that_do_not_match_the_file_are_never_removed(old_run, monkeypatch):
    """Rows written after the export (the run changed under it) fail the check: nothing is removed."""
    real = archive.table_write

    def write_then_add_a_row(table, rows, path):
        real(table, rows, path)
        if table is archive.DECISIONS:
            SelectionDecision.objects.create(
                run=old_run,
                step=99,
                prompt_key="late",
                layer="x",
                method="hive",
                action="kept",
                reason="r",
                message="m",
            )

    monkeypatch.setattr(archive, "table_write", write_then_add_a_row)
    count = SelectionDecision.objects.filter(run=old_run).count()
    with pytest.raises(ArchiveRefused, match="nothing was removed"):
        run_telemetry_archive(old_run.pk)
    assert SelectionDecision.objects.filter(run=old_run).count() == count + 1
    assert PromptObservation.objects.filter(run=old_run).exists()
    old_run.refresh_from_db()
    assert old_run.telemetry_archived_at is None and old_run.telemetry_archive_path == ""  # resumable again


@pytest.mark.django_db
def test_a_second_archive_of_the_same_run_at_once_is_refused_and_touches_nothing(old_run):
    decisions = _db_rows(SelectionDecision, old_run, DEC_FIELDS)
    with retention._archive_lock(f"acme/{old_run.pk}", old_run.pk):  # another process is archiving it
        with pytest.raises(ArchiveRefused, match="another process"):
            run_telemetry_archive(old_run.pk)
        assert retention_apply() == []  # the pass logs it and goes on
    assert _db_rows(SelectionDecision, old_run, DEC_FIELDS) == decisions
    assert not (archive.archive_root() / f"acme/{old_run.pk}").exists()
    assert run_telemetry_archive(old_run.pk).status == "archived"  # once the lock is free


@pytest.mark.django_db
def test_an_archived_run_cannot_be_resumed(old_run):
    Run.objects.filter(pk=old_run.pk).update(status=RunStatus.CANCELLED, last_checkpoint_step=2)
    run_telemetry_archive(old_run.pk)
    with pytest.raises(RunStateError, match="archived"):
        run_resume(run=Run.objects.get(pk=old_run.pk))


@pytest.mark.django_db
def test_a_prompt_read_opens_only_the_row_groups_that_may_hold_it(acme, dataset, monkeypatch):
    """Sorted by prompt_key with small row groups, one prompt's rows sit in few of them."""
    monkeypatch.setattr(archive, "ROW_GROUP_ROWS", 4)
    team_set_telemetry_retention(team=acme, days=30)
    run = _run(acme, dataset, "groups", steps=8)
    before = sel.prompt_observations(run, KEYS[2])
    run_telemetry_archive(run.pk)
    run.refresh_from_db()
    path = archive.archive_dir(run.telemetry_archive_path) / archive.OBSERVATIONS.file
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(i).column(2).statistics for i in range(meta.num_row_groups)]
    holding = [g for g in groups if g.min <= KEYS[2] <= g.max]
    assert meta.num_row_groups >= 6 and len(holding) <= len(before) // 4 + 2
    assert all(a.min <= b.min for a, b in itertools.pairwise(groups))  # sorted by prompt_key
    assert sel.prompt_observations(run, KEYS[2]) == before
