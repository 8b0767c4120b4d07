"""One partition per run for the per-prompt telemetry tables (decisions, observations).

On PostgreSQL ``runs_selectiondecision`` and ``runs_promptobservation`` are ``PARTITION BY LIST
(run_id)`` tables (migration telemetry 0004): each run's rows live in a table of their own,
``<table>_run<id>``, made when the run is made (``run_partitions_create``, called by the
``post_save`` receiver in ``telemetry.signals`` for every new run), and a ``<table>_default``
partition holds any row whose run has none (a safety net: ``run_partitions_create`` moves such
rows into the run's partition when it makes it). Removing a run's rows (deleting the run, or
archiving it) is then one ``DETACH PARTITION`` per table, whatever their number: they leave every
query at once, and ``dropped_partitions_purge`` (beat) drops the detached tables later, off the
parent's lock. COPY and INSERT go to the parent table, which routes each row.

Indexes are declared on the parent (the model's ``Meta.indexes``) and Postgres builds them on
every partition: run_id is constant inside a partition, so no index key holds it.

On SQLite (the embedded mode) the tables stay plain tables: every function here is a plain
DELETE or nothing.
"""

from __future__ import annotations

import logging
import re

from django.db import connection

TABLES = ("runs_selectiondecision", "runs_promptobservation")
log = logging.getLogger(__name__)


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def partition_name(table: str, run_id: int) -> str:
    return f"{table}_run{int(run_id)}"


def default_partition_name(table: str) -> str:
    return f"{table}_default"


def _exists(cursor, name: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    return bool(cursor.fetchone()[0])


def _partitioned(cursor, table: str) -> bool:
    """Whether ``table`` is a partitioned table: not before migration telemetry 0004 has run
    (a database being migrated, a migration test at an older state)."""
    cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row and row[0])


def run_partitions_create(run_id: int) -> None:
    """Make the run's partition of each table (nothing when it has one; nothing on SQLite).

    Rows of this run already in the default partition (written before the partition existed)
    move into it, so the new partition's bounds never clash with the default's rows.
    """
    if not is_partitioned():
        return
    run_id = int(run_id)
    with connection.cursor() as cursor:
        for table in TABLES:
            name = partition_name(table, run_id)
            if _exists(cursor, name) or not _partitioned(cursor, table):
                continue
            default = default_partition_name(table)
            # A CHECK that matches the bound lets ATTACH skip its validating scan.
            cursor.execute(
                f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS, '
                f'CONSTRAINT "{name}_bound" CHECK (run_id IS NOT NULL AND run_id = {run_id}))'
            )
            if _exists(cursor, default):
                cursor.execute(
                    f'WITH moved AS (DELETE FROM "{default}" WHERE run_id = %s RETURNING *) '
                    f'INSERT INTO "{name}" SELECT * FROM moved',
                    [run_id],
                )
            cursor.execute(f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES IN ({run_id})')
            cursor.execute(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_bound"')


def dropped_name(table: str, run_id: int) -> str:
    """The detached partition of a removed run, waiting for ``dropped_partitions_purge``."""
    return f"{table}_dropped_run{int(run_id)}"


DROPPED = re.compile(rf"^(?:{'|'.join(TABLES)})_dropped_run[0-9]+$")


def run_rows_drop(run_id: int) -> None:
    """Remove every decision and observation row of the run from every query.

    Postgres: detaches the run's partitions and renames them ``dropped_name``: a change to the
    catalog (bench/telemetry_drop.py: 5 ms at 10,000 rows, 9 ms at 1,000,000), and the only part
    that locks the parent tables, which every step's COPY of every run writes through. Dropping
    a table costs time with its size (its files are freed at commit: 73-98 ms for a million
    rows), which held the parent's lock as long while partitions were dropped attached; now
    ``dropped_partitions_purge`` drops the detached tables later, each alone. Any of the run's
    rows in the default partition are deleted. Rolled back with the transaction that called it.
    SQLite: one DELETE per table.
    """
    run_id = int(run_id)
    with connection.cursor() as cursor:
        if not is_partitioned():
            for table in TABLES:
                cursor.execute(f'DELETE FROM "{table}" WHERE run_id = %s', [run_id])
            return
        for table in TABLES:
            name, target = partition_name(table, run_id), dropped_name(table, run_id)
            if _exists(cursor, name):
                cursor.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{name}"')
                # A table of this name is left only if this run's partition was made again after an
                # earlier removal (a run id is never reused): it is as dead, drop it now.
                cursor.execute(f'DROP TABLE IF EXISTS "{target}"')
                cursor.execute(f'ALTER TABLE "{name}" RENAME TO "{target}"')
            default = default_partition_name(table)
            if _exists(cursor, default):
                cursor.execute(f'DELETE FROM "{default}" WHERE run_id = %s', [run_id])


def dropped_partitions(cursor) -> list[str]:
    """The tables ``run_rows_drop`` detached whose removal has committed (an uncommitted
    detach is not visible here), in name order."""
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition "
        "AND c.relname LIKE ANY (%s) ORDER BY c.relname",
        [[f"{table}\\_dropped\\_run%" for table in TABLES]],
    )
    return [name for (name,) in cursor.fetchall() if DROPPED.match(name)]


def dropped_partitions_purge() -> list[str]:
    """Drop the detached partitions of removed runs (``run_rows_drop``), each in a transaction
    of its own when called outside one: none is attached, so no parent table is locked while a
    table's files are freed, and a step of any run goes on meanwhile. Returns the names dropped;
    [] on SQLite. Beat calls it every EDGEPLANE_PARTITIONS_PURGE_SECONDS."""
    if not is_partitioned():
        return []
    dropped = []
    with connection.cursor() as cursor:
        for name in dropped_partitions(cursor):
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
            dropped.append(name)
    if dropped:
        log.info("dropped %s detached partitions of removed runs", len(dropped))
    return dropped


def archived_name(table: str, run_id: int) -> str:
    return f"{table}_archived_run{int(run_id)}"


def run_rows_archive(run_id: int) -> list[str]:
    """Detach the run's partitions (constant time) and keep them as plain tables, named by
    ``archived_name``, out of every query on the parent: for an export to run from before
    they are dropped. Returns the detached tables' names; [] on SQLite (no partitions) or when
    the run has no partition."""
    if not is_partitioned():
        return []
    run_id = int(run_id)
    detached = []
    with connection.cursor() as cursor:
        for table in TABLES:
            name = partition_name(table, run_id)
            if not _exists(cursor, name):
                continue
            target = archived_name(table, run_id)
            cursor.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{name}"')
            cursor.execute(f'ALTER TABLE "{name}" RENAME TO "{target}"')
            detached.append(target)
    return detached


def run_rows_archived_drop(run_id: int) -> None:
    """Drop the tables ``run_rows_archive`` detached (once exported)."""
    if not is_partitioned():
        return
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f'DROP TABLE IF EXISTS "{archived_name(table, int(run_id))}"')


def run_partitions(run_id: int) -> list[str]:
    """The names of the run's partitions that exist (for tests and checks)."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        return [partition_name(t, run_id) for t in TABLES if _exists(cursor, partition_name(t, run_id))]


# -- the migration's conversion ------------------------------------------------------------------


def partition_existing(schema_editor, table: str) -> None:
    """Turn a plain table into a list-partitioned one by run_id, keeping every row and id.

    The plain table is renamed aside, the partitioned parent made like it (defaults and the
    identity of ``id`` included), a partition made for every run and a default one, the rows
    copied over (each lands in its run's partition), the identity moved past the largest id, and
    the old table dropped. Indexes are added after (by the migration), on the filled tables.
    """
    old = f"{table}_unpartitioned"
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [old])
        sequence = cursor.fetchone()[0]
        if sequence:  # the new identity's sequence takes the old one's name
            cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {table}_id_seq_unpartitioned")
        cursor.execute(
            f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY LIST (run_id)'
        )
        cursor.execute(f'CREATE TABLE "{default_partition_name(table)}" PARTITION OF "{table}" DEFAULT')
        cursor.execute(f'SELECT id FROM runs_run UNION SELECT DISTINCT run_id FROM "{old}" ORDER BY 1')
        for (run_id,) in cursor.fetchall():
            cursor.execute(
                f'CREATE TABLE "{partition_name(table, run_id)}" PARTITION OF "{table}" FOR VALUES IN ({int(run_id)})'
            )
        cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE((SELECT MAX(id) FROM \"{old}\"), 0) + 1, false)",
            [table],
        )
        cursor.execute(f'DROP TABLE "{old}"')


def unpartition(schema_editor, table: str) -> None:
    """The reverse of ``partition_existing``: one plain table again, every row and id kept."""
    new = f"{table}_plain"
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{new}" (LIKE "{table}" INCLUDING DEFAULTS)')
        cursor.execute(f'INSERT INTO "{new}" SELECT * FROM "{table}"')
        cursor.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM " + f'"{new}"')
        start = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            [table],
        )
        children = [r[0] for r in cursor.fetchall()]
        cursor.execute(f'DROP TABLE "{table}"')  # drops its partitions
        for child in children:
            cursor.execute(f'DROP TABLE IF EXISTS "{child}"')
        cursor.execute(f'ALTER TABLE "{new}" RENAME TO "{table}"')
        cursor.execute(
            f'ALTER TABLE "{table}" ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (START WITH {start})'
        )
        cursor.execute(f'ALTER TABLE "{table}" ADD PRIMARY KEY (id)')
