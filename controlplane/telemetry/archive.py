"""The Parquet archive of a run's per-prompt telemetry: its format, writing and reading.

A run past its team's retention (``controlplane.telemetry.retention``) has its prompt
observations and selection decisions moved out of the database into two files::

    <EDGEPLANE_ARCHIVE_DIR>/<run.telemetry_archive_path>/observations.parquet
    <EDGEPLANE_ARCHIVE_DIR>/<run.telemetry_archive_path>/decisions.parquet

Each holds the table's columns (the row ``id`` included, so orders and cursors stay those of
the database; a decision's ``scores`` as JSON text), rows sorted by (prompt_key, step, id)
in row groups of ``ROW_GROUP_ROWS`` rows (written ``BATCH_ROWS`` at a time) with min/max
statistics: a read of one prompt's rows opens only the row groups whose prompt_key range
holds it (predicate pushdown), not the whole file. Reads filtered otherwise (the audit trail
without a prompt, the API by method or action) scan the file a batch at a time, keeping at most one page of rows.

Readers (``archive_rows``) answer in the shape of the database selectors' ``.values()``
rows, so the selectors (``frontend.selectors``, ``controlplane.runs.selectors``) switch to
the archive when ``run.telemetry_archived_at`` is set and their callers do not change. The
charts that aggregate a step or a window of steps read columns (``archive_table``) and
aggregate them with Arrow (``frontend.selectors``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from django.conf import settings

ROW_GROUP_ROWS = 16_384  # rows per row group: the unit a prompt read opens (smaller: less read per prompt)
BATCH_ROWS = 65_536  # rows held in memory and written at a time by the export

OBSERVATION_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("step", pa.int64()),
        ("prompt_key", pa.string()),
        ("group_size", pa.int64()),
        ("successes", pa.int64()),
        ("pass_rate", pa.float64()),
        ("response_entropy", pa.float64()),
        ("prompt_entropy", pa.float64()),
        ("energy", pa.float64()),
        ("response_tokens", pa.int64()),
        ("trained", pa.bool_()),
        ("bucket", pa.string()),
    ]
)
DECISION_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("step", pa.int64()),
        ("prompt_key", pa.string()),
        ("layer", pa.string()),
        ("method", pa.string()),
        ("action", pa.string()),
        ("reason", pa.string()),
        ("scores", pa.string()),  # the JSON object, as text
        ("message", pa.string()),
    ]
)


@dataclass(frozen=True)
class Table:
    """One archived table: its file name and columns (= the model's fields, in this order)."""

    name: str
    schema: pa.Schema

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"


OBSERVATIONS = Table("observations", OBSERVATION_SCHEMA)
DECISIONS = Table("decisions", DECISION_SCHEMA)
TABLES = (OBSERVATIONS, DECISIONS)


def archive_root() -> Path:
    return Path(settings.EDGEPLANE_ARCHIVE_DIR)


def archive_dir(relative: str) -> Path:
    """The folder of an archive, from the path stored on the run (relative to the root)."""
    root = archive_root().resolve()
    folder = (root / relative).resolve()
    if not relative or root not in folder.parents:
        raise ValueError(f"archive path {relative!r} is not a folder under EDGEPLANE_ARCHIVE_DIR ({root})")
    return folder


# -- writing ---------------------------------------------------------------------------------------------


def _encode(table: Table, column: str, values: Sequence[Any]) -> list[Any]:
    if table is DECISIONS and column == "scores":
        return [json.dumps(v) if not isinstance(v, str) else v for v in values]
    return list(values)


def _batch(table: Table, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in table.fields]
    arrays = [
        pa.array(_encode(table, name, col), type=table.schema.field(name).type)
        for name, col in zip(table.fields, columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def table_write(table: Table, rows: Iterable[Sequence[Any]], path: Path) -> None:
    """Write ``rows`` (tuples in ``table.fields`` order, already sorted by prompt_key, step,
    id) to ``path`` a row group at a time: memory holds one batch, whatever the run's size.
    Written under a temporary name, flushed to disk, then renamed over ``path`` (atomic): a
    crash leaves either no file or a whole one, never a torn one under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd", write_statistics=True) as writer:
            batch: list[Sequence[Any]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    writer.write_batch(_batch(table, batch), row_group_size=ROW_GROUP_ROWS)
                    batch = []
            if batch:
                writer.write_batch(_batch(table, batch), row_group_size=ROW_GROUP_ROWS)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Fingerprint:
    """What must match between a file and the database before rows are removed: the row
    count, and the sum of the row ids (a file with the right count of the wrong rows fails)."""

    rows: int
    id_sum: int


def file_fingerprint(path: Path) -> Fingerprint | None:
    """The fingerprint read back from the file (footer count and the ids, read a row group at
    a time); None when there is no file or it cannot be read as Parquet."""
    if not path.is_file():
        return None
    try:
        parquet = pq.ParquetFile(path)
        rows, id_sum = 0, 0
        for batch in parquet.iter_batches(columns=["id"], batch_size=BATCH_ROWS):
            rows += batch.num_rows
            total = pc.sum(batch.column(0)).as_py()
            id_sum += int(total or 0)
        if rows != parquet.metadata.num_rows:
            return None
        return Fingerprint(rows=rows, id_sum=id_sum)
    except (pa.ArrowException, OSError):
        return None


# -- reading ---------------------------------------------------------------------------------------------


def _decode(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    if table is DECISIONS and "scores" in row and isinstance(row["scores"], str):
        row["scores"] = json.loads(row["scores"])
    return row


def _expression(
    prompt: str | None = None,
    prompts: Sequence[str] | None = None,
    method: str | None = None,
    action: str | None = None,
    step_gt: int | None = None,
    step_min: int | None = None,
    step_max: int | None = None,
    id_gt: int | None = None,
    id_lt: int | None = None,
    after_key: tuple[int, int] | None = None,
) -> ds.Expression | None:
    """The filter as an Arrow expression: the prompt_key equality meets the row groups' statistics."""
    parts: list[ds.Expression] = []
    if prompt is not None:
        parts.append(ds.field("prompt_key") == prompt)
    if prompts is not None:
        parts.append(ds.field("prompt_key").isin(list(prompts)))
    if method is not None:
        parts.append(ds.field("method") == method)
    if action is not None:
        parts.append(ds.field("action") == action)
    if step_gt is not None:
        parts.append(ds.field("step") > step_gt)
    if step_min is not None:
        parts.append(ds.field("step") >= step_min)
    if step_max is not None:
        parts.append(ds.field("step") <= step_max)
    if id_gt is not None:
        parts.append(ds.field("id") > id_gt)
    if id_lt is not None:
        parts.append(ds.field("id") < id_lt)
    if after_key is not None:  # (step, id) > after_key
        step, row_id = after_key
        parts.append((ds.field("step") > step) | ((ds.field("step") == step) & (ds.field("id") > row_id)))
    if not parts:
        return None
    expression = parts[0]
    for part in parts[1:]:
        expression = expression & part
    return expression


def _sort_keys(order: Sequence[str]) -> list[tuple[str, str]]:
    return [(name.lstrip("-"), "descending" if name.startswith("-") else "ascending") for name in order]


def _scanner(relative: str, table: Table, columns: Sequence[str], filters: dict[str, Any]) -> ds.Scanner:
    path = archive_dir(relative) / table.file
    if not path.is_file():
        raise FileNotFoundError(f"the archive of this run has no {table.file} (looked in {path.parent})")
    dataset = ds.dataset(path, format="parquet", schema=table.schema)
    return dataset.scanner(columns=list(columns), filter=_expression(**filters), batch_size=BATCH_ROWS)


def archive_table(relative: str, table: Table, *, columns: Sequence[str], **filters: Any) -> pa.Table:
    """The ``columns`` of an archived table's rows that match ``filters`` (``_expression``'s
    keywords), as one Arrow table, for the charts that aggregate a step or a window of steps
    (``frontend.selectors``). Only those columns are read; a filter on prompt keys skips the row
    groups whose key range holds none of them, any other filter scans the file."""
    return _scanner(relative, table, columns, filters).to_table()


def archive_rows(
    relative: str,
    table: Table,
    *,
    columns: Sequence[str],
    order: Sequence[str],
    limit: int | None = None,
    offset: int = 0,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Rows of an archived table as dicts of ``columns``, filtered (``_expression``'s
    keywords), sorted by ``order`` (column names, "-" for descending), rows
    [offset, offset + limit) of that order.

    With a limit the file is read a batch at a time, keeping only the best offset + limit
    rows so far: memory stays one batch and one page. Without one (one prompt's rows) the
    matching rows are read whole: the prompt_key filter opens only the row groups that may
    hold them."""
    keys = _sort_keys(order)
    needed = list(dict.fromkeys([*columns, *(k for k, _ in keys)]))
    scanner = _scanner(relative, table, needed, filters)
    keep = None if limit is None else offset + limit
    best: pa.Table | None = None
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        part = pa.Table.from_batches([batch])
        best = part if best is None else pa.concat_tables([best, part])
        if keep is not None and best.num_rows > keep:
            best = best.sort_by(keys).slice(0, keep)
    if best is None:
        return []
    best = best.sort_by(keys).slice(offset, limit)
    return [_decode(table, row) for row in best.select(list(columns)).to_pylist()]
