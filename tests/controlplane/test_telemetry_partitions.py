"""Decisions and observations partitioned by run (controlplane.telemetry.partitions).

On Postgres every run has its own partition of each table, rows written through the parent land
in it, a replayed step still replaces its rows, and deleting a run detaches its partitions (a
purge drops them later, locking no parent). The migration turns plain tables holding rows into
partitioned ones without losing a row or an id, and back. On SQLite (the embedded mode) the
tables stay plain and the same calls work (a subprocess with no DATABASE_URL, as
tests/controlplane/test_sqlite_concurrency.py runs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import OperationalError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from controlplane.accounts.models import Team
from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run
from controlplane.telemetry import partitions
from controlplane.telemetry.models import PromptObservation, SelectionDecision

ROOT = Path(__file__).resolve().parents[2]
TABLES = partitions.TABLES
postgres_only = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="partitions exist on PostgreSQL only"
)


def make_run(team: Team, dataset: Dataset, name: str = "r") -> Run:
    return Run.objects.create(team=team, dataset=dataset, name=name, config={}, status="running")


@pytest.fixture
def team_and_dataset(db):
    team = Team.objects.create(name="Part", slug="part")
    return team, Dataset.objects.create(team=team, name="d")


def write(run: Run, step: int, keys: list[str]) -> None:
    """Rows of one step, as the ORM writes them (through the parent table)."""
    PromptObservation.objects.bulk_create(
        [
            PromptObservation(
                run=run,
                step=step,
                prompt_key=k,
                group_size=4,
                successes=1,
                pass_rate=0.25,
                response_tokens=3,
                trained=True,
                bucket="edge",
            )
            for k in keys
        ]
    )
    SelectionDecision.objects.bulk_create(
        [
            SelectionDecision(
                run=run,
                step=step,
                prompt_key=k,
                layer="pre_rollout",
                method=m,
                action="kept",
                reason="hive.stage2_kept",
                scores={"entropy": 0.5},
                message="kept",
            )
            for k in keys
            for m in ("hive", "lze")
        ]
    )


def tables_of_rows(table: str, run: Run) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT DISTINCT tableoid::regclass::text FROM "{table}" WHERE run_id = %s', [run.id])
        return {r[0] for r in cursor.fetchall()}


def table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return bool(cursor.fetchone()[0])


@postgres_only
def test_every_new_run_gets_its_own_partition_of_each_table_and_its_rows_land_there(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    runs = [make_run(team, dataset, f"r{i}") for i in range(3)]
    for i, run in enumerate(runs):
        assert sorted(partitions.run_partitions(run.id)) == sorted(partitions.partition_name(t, run.id) for t in TABLES)
        write(run, 0, [f"k{j}" for j in range(i + 2)])
    for i, run in enumerate(runs):
        for table in TABLES:
            assert tables_of_rows(table, run) == {partitions.partition_name(table, run.id)}
        assert SelectionDecision.objects.filter(run=run).count() == 2 * (i + 2)
        assert PromptObservation.objects.filter(run=run).count() == i + 2


@postgres_only
def test_the_tables_are_list_partitioned_by_run_with_a_default_partition(db) -> None:
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute("SELECT pg_get_partkeydef(to_regclass(%s))", [table])
            assert cursor.fetchone()[0] == "LIST (run_id)"
            assert table_exists(partitions.default_partition_name(table))
            cursor.execute(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'f'", [table]
            )
            assert cursor.fetchone()[0] == 0  # no foreign key: its per-row trigger halves COPY


@postgres_only
def test_rows_of_a_run_without_a_partition_wait_in_the_default_one_and_move_when_it_is_made(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    run = make_run(team, dataset)
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f'DROP TABLE "{partitions.partition_name(table, run.id)}"')
    write(run, 0, ["a", "b"])
    assert tables_of_rows("runs_selectiondecision", run) == {"runs_selectiondecision_default"}
    partitions.run_partitions_create(run.id)
    partitions.run_partitions_create(run.id)  # a second call changes nothing
    for table in TABLES:
        assert tables_of_rows(table, run) == {partitions.partition_name(table, run.id)}
    assert SelectionDecision.objects.filter(run=run).count() == 4


def test_a_replayed_step_replaces_its_rows_through_the_ingestion_service(acme, enqueued) -> None:
    from django.contrib.auth import get_user_model

    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.services import run_claim, run_create
    from controlplane.telemetry.services import step_ingest
    from tests.frontend.helpers import CONFIG, step_record

    dataset = dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")
    bob = get_user_model().objects.get(username="bob")
    run = run_create(team=acme, dataset=dataset, name="replay", config=dict(CONFIG), user=bob)
    assert len(partitions.run_partitions(run.id)) == (2 if connection.vendor == "postgresql" else 0)
    run_claim(run_id=run.id, worker="test:1")
    keys = [f"edgeplane/add:{i}" for i in range(4, 8)]
    for step in range(3):
        step_ingest(run_id=run.id, record=step_record(step, keys))
    per_step = SelectionDecision.objects.filter(run=run, step=2).count()
    assert per_step > 0
    step_ingest(run_id=run.id, record=step_record(2, keys[:2]))  # step 2 again, with fewer prompts
    assert PromptObservation.objects.filter(run=run, step=2).count() == 2
    assert SelectionDecision.objects.filter(run=run, step=2).count() == per_step // 2
    assert PromptObservation.objects.filter(run=run).count() == 4 + 4 + 2
    if connection.vendor == "postgresql":
        assert tables_of_rows("runs_selectiondecision", run) == {
            partitions.partition_name("runs_selectiondecision", run.id)
        }


def test_deleting_a_run_removes_its_rows_and_partitions_and_no_other_runs(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    gone, kept = make_run(team, dataset, "gone"), make_run(team, dataset, "kept")
    for run in (gone, kept):
        for step in range(3):
            write(run, step, ["a", "b", "c"])
    gone_id = gone.id
    gone.delete()
    assert not SelectionDecision.objects.filter(run_id=gone_id).exists()
    assert not PromptObservation.objects.filter(run_id=gone_id).exists()
    assert SelectionDecision.objects.filter(run=kept).count() == 18
    assert PromptObservation.objects.filter(run=kept).count() == 9
    if connection.vendor == "postgresql":
        assert partitions.run_partitions(gone_id) == []
        assert not any(table_exists(partitions.partition_name(t, gone_id)) for t in TABLES)
        assert len(partitions.run_partitions(kept.id)) == 2
        # Detached, out of every query, until the purge frees them.
        gone_tables = sorted(partitions.dropped_name(t, gone_id) for t in TABLES)
        with connection.cursor() as cursor:
            assert set(gone_tables) <= set(partitions.dropped_partitions(cursor))
            cursor.execute(f'SELECT count(*) FROM "{partitions.dropped_name("runs_selectiondecision", gone_id)}"')
            assert cursor.fetchone()[0] == 18
        assert set(gone_tables) <= set(partitions.dropped_partitions_purge())
        assert not any(table_exists(name) for name in gone_tables)
        assert len(partitions.run_partitions(kept.id)) == 2
        assert SelectionDecision.objects.filter(run=kept).count() == 18


def test_deleting_a_team_drops_every_runs_rows(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    runs = [make_run(team, dataset, f"r{i}") for i in range(2)]
    for run in runs:
        write(run, 0, ["a"])
    ids = [r.id for r in runs]
    Run.objects.filter(pk__in=ids).delete()  # a queryset delete sends each run's signals too
    assert not SelectionDecision.objects.filter(run_id__in=ids).exists()
    assert all(partitions.run_partitions(i) == [] for i in ids)


def test_run_rows_drop_removes_one_runs_rows_and_can_be_called_twice(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    a, b = make_run(team, dataset, "a"), make_run(team, dataset, "b")
    write(a, 0, ["x", "y"])
    write(b, 0, ["x"])
    partitions.run_rows_drop(a.id)
    partitions.run_rows_drop(a.id)
    assert not SelectionDecision.objects.filter(run=a).exists()
    assert not PromptObservation.objects.filter(run=a).exists()
    assert SelectionDecision.objects.filter(run=b).count() == 2
    assert Run.objects.filter(pk=a.pk).exists()  # the run itself stays


@postgres_only
def test_a_removal_rolled_back_leaves_the_runs_partitions_attached_with_their_rows(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    run_id = make_run(team, dataset).id
    write(Run.objects.get(pk=run_id), 0, ["a", "b"])
    with pytest.raises(RuntimeError), transaction.atomic():
        Run.objects.get(pk=run_id).delete()
        assert not SelectionDecision.objects.filter(run_id=run_id).exists()
        raise RuntimeError("the request failed after the delete")
    assert sorted(partitions.run_partitions(run_id)) == sorted(partitions.partition_name(t, run_id) for t in TABLES)
    assert SelectionDecision.objects.filter(run_id=run_id).count() == 4
    assert not any(table_exists(partitions.dropped_name(t, run_id)) for t in TABLES)


@postgres_only
def test_a_runs_partitions_made_again_after_a_removal_are_removed_again(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    run = make_run(team, dataset)
    write(run, 0, ["a"])
    partitions.run_rows_drop(run.id)
    partitions.run_partitions_create(run.id)
    write(run, 1, ["b", "c"])
    partitions.run_rows_drop(run.id)  # the first removal's tables not yet purged
    assert not SelectionDecision.objects.filter(run=run).exists()
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{partitions.dropped_name("runs_selectiondecision", run.id)}"')
        assert cursor.fetchone()[0] == 4  # the second removal's rows
    partitions.dropped_partitions_purge()
    assert not any(table_exists(partitions.dropped_name(t, run.id)) for t in TABLES)


@postgres_only
def test_the_purge_drops_only_detached_partitions_of_removed_runs(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    partitions.dropped_partitions_purge()  # what other tests' committed removals left
    gone, kept = make_run(team, dataset, "gone"), make_run(team, dataset, "kept")
    write(gone, 0, ["a"])
    write(kept, 0, ["a"])
    lookalikes = ["runs_selectiondecision_dropped_run12x", "runs_selectiondecision_dropped_runs",
                  "runs_promptobservationx_dropped_run7", "other_dropped_run7"]
    with connection.cursor() as cursor:
        for name in lookalikes:
            cursor.execute(f'CREATE TABLE "{name}" (id int)')
    partitions.run_rows_drop(gone.id)
    dropped = partitions.dropped_partitions_purge()
    assert sorted(partitions.dropped_name(t, gone.id) for t in TABLES) == sorted(dropped)
    assert all(table_exists(name) for name in lookalikes)
    assert len(partitions.run_partitions(kept.id)) == 2 and SelectionDecision.objects.filter(run=kept).count() == 2
    assert partitions.dropped_partitions_purge() == []


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_purge_locks_no_parent_table_a_step_writes_through(live_database_url) -> None:
    """Another session holds a write lock on both parent tables (a step of another run, still
    open). Removing a run must wait for it (detaching changes the parents), but the purge that
    frees the removed run's files must not: it touches no attached table. Dropping the partition
    while attached, as before, would wait for the step's commit."""
    team = Team.objects.create(name="Purge", slug="purge")
    dataset = Dataset.objects.create(team=team, name="d")
    gone, busy = make_run(team, dataset, "gone"), make_run(team, dataset, "busy")
    write(gone, 0, ["a", "b"])
    partitions.run_rows_drop(gone.id)  # committed: autocommit
    with psycopg.connect(live_database_url) as step:
        with step.cursor() as cursor:  # a transaction, left open
            cursor.execute("INSERT INTO runs_promptobservation (run_id, step, prompt_key, group_size, successes, "
                           "pass_rate, response_tokens, trained, bucket) VALUES (%s, 0, 'k', 4, 1, 0.25, 3, true, "
                           "'edge')", [busy.id])
            cursor.execute("SELECT id FROM runs_selectiondecision WHERE run_id = %s FOR UPDATE", [busy.id])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
            try:  # the purge also takes what other tests' removals left
                assert {partitions.dropped_name(t, gone.id) for t in TABLES} <= set(
                    partitions.dropped_partitions_purge())
                with pytest.raises(OperationalError, match="lock timeout"):
                    partitions.run_rows_drop(busy.id)  # detaching waits for the open step, as it must
            finally:
                cursor.execute("RESET lock_timeout")
        step.rollback()
    assert len(partitions.run_partitions(busy.id)) == 2


@postgres_only
def test_an_archived_runs_rows_leave_every_query_and_stay_in_a_table_of_their_own(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    a, b = make_run(team, dataset, "a"), make_run(team, dataset, "b")
    write(a, 0, ["x", "y", "z"])
    write(b, 0, ["x"])
    names = partitions.run_rows_archive(a.id)
    assert sorted(names) == sorted(partitions.archived_name(t, a.id) for t in TABLES)
    assert not SelectionDecision.objects.filter(run=a).exists()
    assert SelectionDecision.objects.filter(run=b).count() == 2
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{partitions.archived_name("runs_selectiondecision", a.id)}"')
        assert cursor.fetchone()[0] == 6
    partitions.run_rows_archived_drop(a.id)
    assert not any(table_exists(n) for n in names)


def test_orm_reads_and_deletes_by_id_still_work(team_and_dataset) -> None:
    team, dataset = team_and_dataset
    run = make_run(team, dataset)
    write(run, 0, ["a", "b"])
    first = SelectionDecision.objects.filter(run=run).order_by("id").first()
    assert SelectionDecision.objects.get(pk=first.pk).prompt_key == first.prompt_key
    first.delete()
    assert SelectionDecision.objects.filter(run=run).count() == 3
    ids = list(SelectionDecision.objects.filter(run=run).values_list("id", flat=True))
    assert len(set(ids)) == 3 and first.pk not in ids


# -- the migration, on a database holding rows ---------------------------------------------------------

BEFORE = [("telemetry", "0003_effective_share_may_be_empty")]


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def insert_plain_rows(run_id: int, step: int, n: int) -> None:
    """Rows as the old ingestion wrote them into the plain tables."""
    with connection.cursor() as cursor:
        for i in range(n):
            cursor.execute(
                "INSERT INTO runs_selectiondecision (run_id, step, prompt_key, layer, method, action, "
                "reason, scores, message) VALUES (%s, %s, %s, 'pre_rollout', 'hive', 'kept', "
                "'hive.stage2_kept', '{}', 'kept')",
                [run_id, step, f"k{i}"],
            )
            cursor.execute(
                "INSERT INTO runs_promptobservation (run_id, step, prompt_key, group_size, successes, "
                "pass_rate, response_tokens, trained, bucket) VALUES (%s, %s, %s, 4, 1, 0.25, 3, true, "
                "'edge')",
                [run_id, step, f"k{i}"],
            )


def rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT id, run_id, step, prompt_key FROM "{table}" ORDER BY id')
        return cursor.fetchall()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_every_existing_row_into_its_runs_partition_keeping_ids_and_back() -> None:
    team = Team.objects.create(name="m", slug="m")
    dataset = Dataset.objects.create(team=team, name="d")
    try:
        migrate(BEFORE)
        runs = [make_run(team, dataset, f"r{i}") for i in range(3)]  # made while the tables are plain
        for i, run in enumerate(runs):
            insert_plain_rows(run.id, 0, i + 1)
            insert_plain_rows(run.id, 1, 2)
        before = {t: rows(t) for t in TABLES}
        migrate(latest())
        for table in TABLES:
            assert rows(table) == before[table]  # every row, every id
            for run in runs:
                assert tables_of_rows(table, run) == {partitions.partition_name(table, run.id)}
        write(runs[0], 5, ["new"])  # the identity goes on past the moved ids
        newest = SelectionDecision.objects.filter(run=runs[0], step=5).order_by("id").first()
        assert newest.id > max(r[0] for r in before["runs_selectiondecision"])
        after = {t: rows(t) for t in TABLES}
        migrate(BEFORE)  # back: plain tables with the same rows
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'runs_selectiondecision'")
            assert cursor.fetchone()[0] == "r"
        assert {t: rows(t) for t in TABLES} == after
    finally:
        migrate(latest())


# -- SQLite: plain tables, the same calls ---------------------------------------------------------------

SQLITE_SCRIPT = """
import django, json
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
call_command("migrate", "telemetry", "0003", verbosity=0)  # the tables as they were, then rows in them
from controlplane.accounts.models import Team
from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run
team = Team.objects.create(name="t", slug="t")
dataset = Dataset.objects.create(team=team, name="d")
old = Run.objects.create(team=team, dataset=dataset, name="old", config={})
with connection.cursor() as cursor:
    cursor.execute("INSERT INTO runs_selectiondecision (run_id, step, prompt_key, layer, method, action, reason, "
                   "scores, message) VALUES (%s, 0, 'k', 'pre_rollout', 'hive', 'kept', 'r', '{}', 'm')", [old.id])
call_command("migrate", verbosity=0)
from controlplane.telemetry import partitions
from controlplane.telemetry.models import SelectionDecision
out = {"kept_through_migration": SelectionDecision.objects.filter(run=old).count()}
new = Run.objects.create(team=team, dataset=dataset, name="new", config={})
SelectionDecision.objects.create(run=new, step=0, prompt_key="k", layer="l", method="m", action="kept", reason="r",
                                 scores={}, message="m")
SelectionDecision.objects.filter(run=new, step=0).delete()
SelectionDecision.objects.create(run=new, step=0, prompt_key="k", layer="l", method="m", action="kept", reason="r",
                                 scores={}, message="m")
out["replaced"] = SelectionDecision.objects.filter(run=new).count()
with connection.cursor() as cursor:
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'runs_selectiondecision%'")
    out["tables"] = sorted(r[0] for r in cursor.fetchall())
out["partitions"] = partitions.run_partitions(new.id)
partitions.run_rows_drop(old.id)
out["after_drop"] = SelectionDecision.objects.filter(run=old).count()
new_id = new.id
new.delete()
out["after_delete"] = SelectionDecision.objects.filter(run_id=new_id).count()
print(json.dumps(out))
"""


def test_sqlite_keeps_plain_tables_and_the_same_calls_work(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(EDGEPLANE_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="controlplane.settings")
    done = subprocess.run(
        [sys.executable, "-c", SQLITE_SCRIPT],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "kept_through_migration": 1,
        "replaced": 1,
        "tables": ["runs_selectiondecision"],
        "partitions": [],
        "after_drop": 0,
        "after_delete": 0,
    }
