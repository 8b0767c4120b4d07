"""The telemetry tables moved from the runs app to the telemetry app in Django's state only:
a database migrated to the old head keeps every row, and the move runs no SQL on the tables."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from controlplane.accounts.models import Team
from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run
from controlplane.telemetry.models import StepSummary

pytestmark = pytest.mark.django_db(transaction=True)

OLD_HEAD = [("runs", "0003_savings_yardsticks_and_baseline"), ("telemetry", "0001_initial")]
NEW_HEAD = [("runs", "0004_telemetry_tables_move_to_telemetry"), ("telemetry", "0002_telemetry_tables_from_runs")]
TABLES = ("runs_stepsummary", "runs_evaluation", "runs_promptobservation", "runs_selectiondecision",
          "runs_promptstate")


def migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def latest() -> list[tuple[str, str]]:
    """Every app's last migration: where the tests after this one expect the database."""
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def test_the_move_keeps_each_table_name() -> None:
    from django.apps import apps

    tables = {m._meta.db_table for m in apps.get_app_config("telemetry").get_models()}
    assert set(TABLES) <= tables
    assert not set(TABLES) & {m._meta.db_table for m in apps.get_app_config("runs").get_models()}


def test_a_database_at_the_old_head_keeps_its_steps_and_content_types_through_the_move() -> None:
    from django.contrib.contenttypes.models import ContentType

    team = Team.objects.create(name="t", slug="t")
    dataset = Dataset.objects.create(team=team, name="d")
    run = Run.objects.create(team=team, dataset=dataset, name="r", config={})
    try:
        migrate(OLD_HEAD)
        with connection.cursor() as cursor:  # a step written by the old code, as ingestion wrote it
            cursor.execute(
                "INSERT INTO runs_stepsummary (run_id, step, epoch, rollouts_generated, tokens_generated, "
                "rollouts_effective, rollouts_trained, rollouts_uniform, groups_generated, groups_all_correct, "
                "groups_all_wrong, groups_trained, forward_tokens_extra, backward_tokens, rollout_savings, "
                "effective_share_of_generated, flops_estimate, flops_uniform_estimate, device_seconds, "
                "uniform_device_seconds, seconds, metrics, train, alerts, created_at) VALUES "
                "(%s, 3, 0, 8, 80, 4, 4, 16, 2, 0, 0, 1, 0, 40, 0.5, 0.5, 1.0, 2.0, 0.1, 0.2, "
                "'{}', '{}', '{}', '[]', now())", [run.id])
        ContentType.objects.filter(app_label="telemetry", model="stepsummary").delete()
        ContentType.objects.get_or_create(app_label="runs", model="stepsummary")
        migrate(NEW_HEAD)
    finally:
        migrate(latest())
    step = StepSummary.objects.get(run=run)
    assert (step.step, step.rollouts_generated, step.rollouts_uniform) == (3, 8, 16)
    assert ContentType.objects.filter(app_label="telemetry", model="stepsummary").exists()
    assert not ContentType.objects.filter(app_label="runs", model="stepsummary").exists()


def test_the_move_runs_no_sql_on_the_tables(capsys) -> None:
    for app, name in NEW_HEAD:
        call_command("sqlmigrate", app, name)
    sql = capsys.readouterr().out.upper()
    assert not any(word in sql for word in ("CREATE TABLE", "ALTER TABLE", "DROP TABLE", "CREATE INDEX"))
