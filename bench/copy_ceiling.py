"""What COPY alone can do on this machine: an epoch end's decision rows, with and without the table's indexes.

The ceiling under ``bench/telemetry_ingest.py``'s epoch end: ``--rows`` pruned decisions (the
same record, built as the engine builds it) COPYed in one transaction (fsync on, CHECKPOINT
before each), variants:
- ``csv``: Arrow's CSV writer, what ingest sent before binary COPY;
- ``binary``: ``telemetry.pgcopy``, what ``copy_columns`` sends now;
- ``binary_sorted``: the same rows sorted by prompt key first (not what ingest does: it keeps
  the engine's order, which is the decisions' id order in the audit trail and the API);
each into the real decision table (a fresh run's partition, with its indexes) and into
``*_no_index``: a copy of its columns without any index. Seconds are the COPY's and its commit's;
the encoding is timed apart. Prints and writes bench/results/copy_ceiling.json.
    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/copy_ceiling.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

FORMATS = ("csv", "binary", "binary_sorted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from bench._timing import bench_team, django_on_postgres, postgres_settings, write_results

    django_on_postgres()
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    from django.db import connection, transaction

    from bench.telemetry_ingest import epoch_record
    from controlplane.runs.models import Run
    from controlplane.telemetry.models import SelectionDecision
    from controlplane.telemetry.pgcopy import binary_copy_chunks
    from controlplane.telemetry.services import DECISION_TYPES, _decision_columns, column_types

    pg_settings = postgres_settings()
    team, dataset = bench_team("bench")
    record = epoch_record(1, args.rows)
    parent = SelectionDecision._meta.db_table
    names = ", ".join(DECISION_TYPES)

    def q(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def encoded(run_id: int, form: str) -> tuple[list[Any], float]:
        columns = _decision_columns(run_id, 1, record.rows("decisions"))
        table = pa.table({n: c if isinstance(c, pa.Array) else pa.array(c, type=DECISION_TYPES[n])
                          for n, c in columns.items() if n in DECISION_TYPES}).select(list(DECISION_TYPES))
        start = time.perf_counter()
        if form == "binary_sorted":
            table = table.take(pc.sort_indices(table["prompt_key"]))
        if form == "csv":
            out = pa.BufferOutputStream()
            pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, batch_size=65_536))
            chunks = [out.getvalue()]
        else:
            with connection.cursor() as cursor:
                pg_types = column_types(cursor, parent, tuple(DECISION_TYPES))
            chunks = [bytes(c) for c in binary_copy_chunks(table, pg_types)]
        return chunks, time.perf_counter() - start

    figures: dict[str, Any] = {}
    for repeat in range(args.repeats):
        for form in FORMATS:
            for indexed in (True, False):
                variant = form if indexed else f"{form}_no_index"
                run = Run.objects.create(team=team, dataset=dataset, name=f"{variant}-{repeat}", config={"steps": 1},
                                         status="running")
                table = parent
                if not indexed:
                    table = f"bench_decision_no_index_{run.id}"
                    q(f"CREATE TABLE {table} (LIKE {parent} INCLUDING DEFAULTS INCLUDING IDENTITY)")
                chunks, encode_s = encoded(run.id, form)
                q("CHECKPOINT")
                start = time.perf_counter()
                with transaction.atomic(), connection.cursor() as cursor:
                    fmt = "csv" if form == "csv" else "binary"
                    with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT {fmt})") as copy:
                        for chunk in chunks:
                            copy.write(chunk)
                seconds = time.perf_counter() - start
                with connection.cursor() as cursor:  # every row went in, once
                    cursor.execute(f"SELECT count(*) FROM {table} WHERE run_id = %s", [run.id])
                    stored = cursor.fetchone()[0]
                if stored != args.rows:
                    sys.exit(f"error: {variant} stored {stored} rows of {args.rows}")
                entry = figures.setdefault(variant, {"seconds": [], "encode_seconds": []})
                entry["seconds"].append(round(seconds, 3))
                entry["encode_seconds"].append(round(encode_s, 3))
                rate = args.rows / seconds
                print(f"{variant:24s} {seconds:6.2f} s = {rate:9,.0f} rows/s  (encoding {encode_s:.2f} s)", flush=True)
                if not indexed:
                    q(f"DROP TABLE {table}")
    for variant, entry in figures.items():
        entry["rows_per_s_median"] = round(args.rows / statistics.median(entry["seconds"]))
    print("median rows/s: " + ", ".join(f"{v} {e['rows_per_s_median']:,}" for v, e in figures.items()))
    print(f"wrote {write_results('copy_ceiling', {'figures': figures, 'rows': args.rows, 'postgres': pg_settings, 'denominator': 'rows / seconds of one COPY and its commit, encoding timed apart'}, args.out)}")  # noqa: E501


if __name__ == "__main__":
    main()
