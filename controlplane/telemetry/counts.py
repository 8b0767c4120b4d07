"""Decisions counted per step (``StepDecisionCount``'s rows), computed in Arrow.

One function for every writer: the ingestion of a step (its decision columns), the migration
that filled the table for runs recorded before it (their database rows or Parquet archives)
and the benches. The database never counts a step's decision rows again after this.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# StepDecisionCount's columns (but run_id) and their Arrow types
COUNT_TYPES = {"step": pa.int64(), "method": pa.string(), "action": pa.string(), "successes": pa.float64(),
               "decisions": pa.int64(), "extra": pa.float64()}
KEYS = ("step", "method", "action", "successes")


def decision_counts(step: Sequence[int] | pa.Array, method: Sequence[str] | pa.Array, action: Sequence[str] | pa.Array,
                    successes: Sequence[float | None] | pa.Array | None,
                    extra: Sequence[float | None] | pa.Array | None) -> pa.Table:
    """Decisions per (step, method, action, successes), with the sum of their ``extra``.

    Each argument is one value per decision; ``successes`` and ``extra`` are its scores of those
    names (None where a decision has none; None for the whole column when no decision has it).
    A decision without a successes score counts under NULL; a missing extra adds 0."""
    rows = len(method)
    columns = {
        "step": pa.array(step, type=pa.int64()),
        "method": pa.array(method, type=pa.string()),
        "action": pa.array(action, type=pa.string()),
        "successes": pa.nulls(rows, pa.float64()) if successes is None else pa.array(successes, type=pa.float64()),
        "extra": pa.nulls(rows, pa.float64()) if extra is None else pa.array(extra, type=pa.float64()),
    }
    counted = pa.table(columns).group_by(list(KEYS), use_threads=False).aggregate(
        [("extra", "sum"), ([], "count_all")])
    return pa.table({
        **{key: counted[key] for key in KEYS},
        "decisions": counted["count_all"],
        "extra": pc.fill_null(counted["extra_sum"], 0.0),  # every decision of the group lacked it
    }).sort_by([(key, "ascending") for key in KEYS])


def counts_select_sql(source: str, vendor: str, *, by_run: bool = True) -> str:
    """The same counts computed by the database from stored decision rows (``source`` has step,
    method, action and the JSON ``scores``): a SELECT of (run_id,) step, method, action, successes,
    decisions, extra. For rows already in a table: the migration that added the counts, the benches."""
    if vendor == "postgresql":
        successes, extra = "(scores->>'successes')::float8", "(scores->>'extra')::float8"
    else:  # SQLite
        successes, extra = "json_extract(scores, '$.successes')", "json_extract(scores, '$.extra')"
    keys = ("run_id, " if by_run else "") + "step, method, action"
    return (f"SELECT {keys}, {successes} AS successes, COUNT(*) AS decisions, COALESCE(SUM({extra}), 0) AS extra "
            f"FROM {source} GROUP BY {keys}, {successes}")


def decision_counts_from_scores(step: Iterable[int], method: Iterable[str], action: Iterable[str],
                                scores: Iterable[str | dict[str, Any]]) -> pa.Table:
    """``decision_counts`` of stored decisions, whose scores are JSON objects (or their text)."""
    successes: list[float | None] = []
    extra: list[float | None] = []
    for value in scores:
        parsed = json.loads(value) if isinstance(value, str) else (value or {})
        successes.append(parsed.get("successes"))
        extra.append(parsed.get("extra"))
    return decision_counts(list(step), list(method), list(action), successes, extra)


def counts_merge(parts: Sequence[pa.Table]) -> pa.Table:
    """Counts of several batches of decisions as the counts of them all (a step may span batches)."""
    if not parts:
        return pa.table({name: pa.array([], type=kind) for name, kind in COUNT_TYPES.items()})
    merged = pa.concat_tables(parts).group_by(list(KEYS), use_threads=False).aggregate(
        [("decisions", "sum"), ("extra", "sum")])
    return pa.table({**{key: merged[key] for key in KEYS}, "decisions": merged["decisions_sum"],
                     "extra": merged["extra_sum"]}).sort_by([(key, "ascending") for key in KEYS])


def archived_decision_counts(path: Path, batch_rows: int = 65_536) -> pa.Table:
    """``decision_counts`` of an archived run's decisions file (``telemetry.archive``), read a
    batch at a time."""
    parts = [decision_counts_from_scores(*(batch.column(name).to_pylist() for name in
                                           ("step", "method", "action", "scores")))
             for batch in pq.ParquetFile(path).iter_batches(columns=["step", "method", "action", "scores"],
                                                            batch_size=batch_rows)]
    return counts_merge(parts)
