"""Dropping a run's telemetry at several run sizes: is it constant time?

For each ``--sizes`` (decision rows a run), ``--repeats`` runs are filled through the same path
as ``bench/telemetry_scale.py`` (rows generated inside Postgres into the run's own partition, its
indexes built, vacuumed as autovacuum leaves a finished run), then ``run_rows_drop`` is timed on
each: what deleting a run or archiving it costs now (its partitions detached, out of every
query: the only part that locks the parent tables), then ``dropped_partitions_purge``, which
drops the detached tables later from beat (their files freed; no parent locked). The yardstick is
the same rows in one plain table with the same indexes (plus one on run_id, as the table had
before partitioning), among another run's rows, removed by ``DELETE ... WHERE run_id``: what
removing a run cost before partitioning.

Run with the durable settings (fsync on):

    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/telemetry_drop.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's modules first

from bench.telemetry_scale import COLUMNS, STAGING_SQL, fill_run

PLAIN = "bench_plain_decisions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-step", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--name", default="telemetry_drop")
    parser.add_argument("--out", type=Path, default=None, help="folder of the results file (default bench/results)")
    args = parser.parse_args()
    from bench._timing import bench_team, django_on_postgres, postgres_settings, summary_ms, write_results

    django_on_postgres()
    from django.db import connection

    from controlplane.runs.models import Run
    from controlplane.telemetry.partitions import dropped_partitions_purge, run_rows_drop

    settings = postgres_settings()
    print("postgres settings:", settings, flush=True)
    team, dataset = bench_team("drop")

    def new_run(label: str) -> Run:
        return Run.objects.create(team=team, dataset=dataset, name=label, config={})

    results = []
    for size in args.sizes:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_decision_rows")
            cursor.execute(STAGING_SQL, {"per_step": args.per_step, "prompts": args.prompts, "rows": size})
        partitioned, purged, plain = [], [], []
        for repeat in range(args.repeats):
            run = new_run(f"drop {size} #{repeat}")
            with connection.cursor() as cursor:
                fill_run(cursor, run.id, bulk=True)
                cursor.execute("VACUUM ANALYZE runs_selectiondecision")
            dropped_partitions_purge()  # what other removals left, so that the purge below times this run's
            start = time.perf_counter()
            run_rows_drop(run.id)
            partitioned.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            assert len(dropped_partitions_purge()) == 2  # this run's two tables
            purged.append((time.perf_counter() - start) * 1e3)
            run.delete()

            # The yardstick: one plain table holding this run's rows and as many of another run's.
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {PLAIN}")
                cursor.execute(f"CREATE TABLE {PLAIN} "
                               "(LIKE runs_selectiondecision INCLUDING DEFAULTS INCLUDING INDEXES)")
                cursor.execute(f"CREATE INDEX ON {PLAIN} (run_id)")
                for run_id in (1, 2):
                    cursor.execute(f"INSERT INTO {PLAIN} (id, run_id, {COLUMNS}) "
                                   f"SELECT g + %s, %s, {COLUMNS} FROM bench_decision_rows", [run_id * size, run_id])
                cursor.execute(f"VACUUM ANALYZE {PLAIN}")
                start = time.perf_counter()
                cursor.execute(f"DELETE FROM {PLAIN} WHERE run_id = 1")
                plain.append((time.perf_counter() - start) * 1e3)
            print(f"{size:>9,} rows #{repeat}: run_rows_drop {partitioned[-1]:8.1f} ms, purge {purged[-1]:8.1f} ms, "
                  f"plain DELETE {plain[-1]:9.1f} ms", flush=True)
        results.append({"rows_per_run": size, "run_rows_drop": summary_ms(partitioned),
                        "dropped_partitions_purge": summary_ms(purged), "plain_delete": summary_ms(plain),
                        "plain_over_drop_median": statistics.median(plain) / statistics.median(partitioned)})
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {PLAIN}")
        cursor.execute("DROP TABLE IF EXISTS bench_decision_rows")
    payload = {
        "what": ("ms to remove one run's decision rows: run_rows_drop (its partitions detached: out of every "
                 "query, the only part under the parent tables' lock), then dropped_partitions_purge (beat: the "
                 "detached tables dropped, their files freed, no parent locked), against DELETE ... WHERE run_id "
                 "from one plain table with the same indexes plus run_id's, holding the run's rows and as many "
                 "of another run's; median (min-max) of the repeats, each run freshly filled"),
        "postgres_settings": settings,
        "sizes": results,
    }
    path = write_results(args.name, payload, args.out)
    for row in results:
        d, u, p = row["run_rows_drop"], row["dropped_partitions_purge"], row["plain_delete"]
        print(f"{row['rows_per_run']:>9,} rows: drop {d['median_ms']:.1f} ms ({d['min_ms']:.1f}-{d['max_ms']:.1f}), "
              f"purge {u['median_ms']:.1f} ms ({u['min_ms']:.1f}-{u['max_ms']:.1f}), "
              f"plain DELETE {p['median_ms']:.1f} ms ({p['min_ms']:.1f}-{p['max_ms']:.1f}), "
              f"{row['plain_over_drop_median']:.2f}x", flush=True)
    print(f"written: {path}", flush=True)


if __name__ == "__main__":
    main()
