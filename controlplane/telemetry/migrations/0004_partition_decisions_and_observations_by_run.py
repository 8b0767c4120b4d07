"""Decisions and observations partitioned by run on PostgreSQL; no foreign key to runs_run.

1. The run foreign keys lose their database constraint (Django's DEFERRABLE INITIALLY DEFERRED
   constraint adds a per-row trigger that halves COPY throughput); deleting a run still removes
   its rows (telemetry.signals drops its partitions; Django's CASCADE deletes what is left).
2. The (run, ...) indexes go.
3. On PostgreSQL only, each table becomes ``PARTITION BY LIST (run_id)`` with one partition per
   existing run and a default one, every row and id kept (telemetry.partitions). SQLite keeps
   plain tables.
4. Decisions get the primary key (run_id, id) on Postgres (a partitioned table's key must hold
   run_id); observations have none (nothing reads them by id; each index costs COPY).
5. The new indexes (no run_id in their keys: constant inside a partition) are built on the
   filled tables; on Postgres each partition gets its own.

Reversible: back, the tables are plain again with their old indexes and constraints.
"""

import django.db.models.deletion
from django.db import migrations, models

import controlplane.telemetry.models

TABLES = ("runs_selectiondecision", "runs_promptobservation")


def partition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    from controlplane.telemetry.partitions import partition_existing

    for table in TABLES:
        partition_existing(schema_editor, table)
    with schema_editor.connection.cursor() as cursor:  # ids stay unique; the API pages by id through it
        cursor.execute("ALTER TABLE runs_selectiondecision ADD PRIMARY KEY (run_id, id)")


def unpartition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    from controlplane.telemetry.partitions import unpartition as plain

    for table in TABLES:
        plain(schema_editor, table)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0007_run_tags"),
        ("telemetry", "0003_effective_share_may_be_empty"),
    ]

    operations = [
        migrations.AlterField(
            model_name="promptobservation",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="observations",
                to="runs.run",
            ),
        ),
        migrations.AlterField(
            model_name="selectiondecision",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="decisions",
                to="runs.run",
            ),
        ),
        migrations.RemoveIndex(model_name="promptobservation", name="runs_prompt_run_id_c12b2d_idx"),
        migrations.RemoveIndex(model_name="promptobservation", name="runs_prompt_run_id_4e3405_idx"),
        migrations.RemoveIndex(model_name="selectiondecision", name="runs_select_run_id_d72556_idx"),
        migrations.RemoveIndex(model_name="selectiondecision", name="runs_select_run_id_061ddf_idx"),
        migrations.RemoveIndex(model_name="selectiondecision", name="runs_select_run_id_21e776_idx"),
        migrations.RunPython(partition, unpartition, elidable=False),
        migrations.AddIndex(
            model_name="promptobservation",
            index=models.Index(fields=["prompt_key", "step"], name="observation_prompt_step"),
        ),
        migrations.AddIndex(
            model_name="promptobservation",
            index=controlplane.telemetry.models.StepRangeIndex(fields=["step"], name="observation_step_range"),
        ),
        migrations.AddIndex(
            model_name="selectiondecision",
            index=models.Index(fields=["prompt_key", "step"], name="decision_prompt_step"),
        ),
        migrations.AddIndex(
            model_name="selectiondecision",
            index=models.Index(fields=["step", "method", "action", "run"], name="decision_step_method_action"),
        ),
    ]
