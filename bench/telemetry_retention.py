"""Telemetry retention on Postgres: archiving a large run to Parquet, and reading it back.

Prints and writes bench/results/telemetry_retention.json:
- the fill (generated inside Postgres; timed apart) of one finished run with --decisions
  decision rows and --observations observation rows over --prompts prompts;
- ``run_telemetry_archive`` of that run: seconds, rows/s (both tables' rows over the whole
  archive: export, read-back verification, the check and the DELETE), file bytes beside the
  tables' size in Postgres, and the process's peak resident memory before and after (the
  export streams: it must not grow with the run);
- one prompt's page reads (``prompt_observations`` + ``prompt_decisions``): median ms from
  Postgres before the archive and from Parquet after, over --keys prompts (each the median of
  --repeats reads), with the spread across prompts; and one unfiltered audit-trail page of the
  archived run (a scan of the file);
- the charts built from each prompt's rows (energy and the learning-edge map at a step, the heat
  map's ranking and one page of its cells): median ms from Postgres before and from Parquet after,
  each checked to answer the same.

Needs DATABASE_URL pointing at a scratch Postgres database (tests/services.py starts one):
    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB ..." .venv/bin/python tests/services.py --durable -- \\
        .venv/bin/python bench/telemetry_retention.py
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


CACHE_MISS = itertools.count(1)  # a new ranking cache key each read, before and after: time the ranking, not the cache


def chart_reads(run, middle: int, keys: list[str]) -> dict:
    """The charts built from each prompt's rows, as ``frontend.selectors`` reads them (the
    database's rows, or the archive's once the run is archived)."""
    from frontend import selectors as sel

    last = middle * 2 + 1
    return {
        "energy at a step": lambda: sorted(sel.energy_rows(run, middle // 2), key=repr),  # a histogram: any order
        "learning-edge map at a step": lambda: sel.edge_points(run, middle // 2),
        "heat map ranking, every step": lambda: sorted(sel.heatmap_prompt_stats(run, 0, last,
                                                                                version=next(CACHE_MISS))),
        "heat map cells, 50 prompts": lambda: sorted(sel.heatmap_key_cells(run, keys, 5, -1, last)),
    }


def same(a, b, name: str) -> None:
    """Equal, floats to 1e-12 relative (a mean sums in another order in Arrow than in Postgres)."""
    import math

    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12), (name, a, b)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), (name, len(a), len(b))
        for x, y in zip(a, b, strict=True):
            same(x, y, name)
    else:
        assert a == b, (name, a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2_000_000)
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=7, help="prompts whose page reads are timed")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default="telemetry_retention", help="results file name (bench/results/<name>.json)")
    args = parser.parse_args()
    from bench._timing import bench_team, django_on_postgres, median_ms, postgres_settings, write_results

    archive_dir = tempfile.mkdtemp(prefix="edgeplane-archive-")
    os.environ["EDGEPLANE_ARCHIVE_DIR"] = archive_dir
    django_on_postgres()
    from django.db import connection
    from django.utils import timezone

    from controlplane.runs.models import Run
    from controlplane.telemetry.models import PromptObservation, SelectionDecision
    from controlplane.telemetry.retention import run_telemetry_archive
    from frontend import selectors as sel

    team, dataset = bench_team("bench-retention")
    run = Run.objects.create(
        team=team, dataset=dataset, name="archived", config={"steps": 1}, status="succeeded", finished_at=timezone.now()
    )
    obs_table, dec_table = PromptObservation._meta.db_table, SelectionDecision._meta.db_table
    p = args.prompts
    with connection.cursor() as cursor:
        start = time.perf_counter()
        cursor.execute(
            f"INSERT INTO {obs_table} (run_id, step, prompt_key, group_size, successes, pass_rate, response_entropy, "
            "prompt_entropy, energy, response_tokens, trained, bucket) "
            "SELECT %s, g / %s, 'bench:' || (g %% %s), 8, g %% 9, (g %% 9) / 8.0, 0.5, 0.7, "
            "CASE WHEN g %% 5 = 0 THEN NULL ELSE 0.3 END, 40, g %% 2 = 0, 'edge' FROM generate_series(0, %s - 1) AS g",
            [run.id, p, p, args.observations],
        )
        cursor.execute(
            f"INSERT INTO {dec_table} (run_id, step, prompt_key, layer, method, action, reason, scores, message) "
            "SELECT %s, g / %s, 'bench:' || (g %% %s), 'pre_rollout', "
            "CASE WHEN g %% 3 = 0 THEN 'hive' ELSE 'lze' END, CASE WHEN g %% 2 = 0 THEN 'kept' ELSE 'skipped' END, "
            "'hive.stage2_kept', '{\"entropy\": 0.5, \"threshold\": 0.25}'::jsonb, "
            "'kept by HIVE stage 2: prompt entropy 0.500 >= median 0.250' FROM generate_series(0, %s - 1) AS g",
            [run.id, p, p, args.decisions],
        )
        fill_seconds = time.perf_counter() - start
        cursor.execute(f"ANALYZE {obs_table}")
        cursor.execute(f"ANALYZE {dec_table}")
        cursor.execute(  # a partitioned table's size is its partitions' (the parent holds no rows)
            "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(%s) UNION ALL "
            "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(%s)", [obs_table, dec_table])
        pg_bytes = sum(int(row[0]) for row in cursor.fetchall())
    settings_used = postgres_settings()

    keys = [f"bench:{(i * 7919) % p}" for i in range(args.keys)]
    run = Run.objects.get(pk=run.pk)
    expected = {k: (sel.prompt_observations(run, k), sel.prompt_decisions(run, k)) for k in keys}
    charts = chart_reads(run, args.observations // p - 1, [f"bench:{(i * 104_729) % p}" for i in range(50)])
    expected_charts = {name: read() for name, read in charts.items()}
    chart_db_ms = {name: median_ms(read, args.repeats, warmup=1) for name, read in charts.items()}
    db_ms = [
        median_ms(lambda k=k: (sel.prompt_observations(run, k), sel.prompt_decisions(run, k)), args.repeats, warmup=1)
        for k in keys
    ]

    from controlplane.telemetry import archive, partitions, retention

    phases = {
        "export_write_seconds": 0.0,
        "verify_read_back_seconds": 0.0,
        "db_fingerprint_seconds": 0.0,
        "rows_drop_seconds": 0.0,
    }

    def timing(name, fn):
        def wrapped(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - start

        return wrapped

    archive.table_write = timing("export_write_seconds", archive.table_write)
    archive.file_fingerprint = timing("verify_read_back_seconds", archive.file_fingerprint)
    retention._db_fingerprint = timing("db_fingerprint_seconds", retention._db_fingerprint)
    partitions.run_rows_drop = timing("rows_drop_seconds", partitions.run_rows_drop)

    rss_before = peak_rss_mib()
    start = time.perf_counter()
    outcome = run_telemetry_archive(run.pk)
    archive_seconds = time.perf_counter() - start
    rss_after = peak_rss_mib()
    rows = outcome.observations + outcome.decisions
    assert rows == args.observations + args.decisions, outcome
    assert not SelectionDecision.objects.filter(run=run).exists()

    run = Run.objects.get(pk=run.pk)
    for k in keys:  # the archive answers what the database answered
        assert (sel.prompt_observations(run, k), sel.prompt_decisions(run, k)) == expected[k], k
    parquet_ms = [
        median_ms(lambda k=k: (sel.prompt_observations(run, k), sel.prompt_decisions(run, k)), args.repeats, warmup=1)
        for k in keys
    ]
    start = time.perf_counter()
    sel.audit_page(run)
    audit_scan_ms = (time.perf_counter() - start) * 1e3
    charts = chart_reads(run, args.observations // p - 1, [f"bench:{(i * 104_729) % p}" for i in range(50)])
    for name, read in charts.items():  # the archive answers what the database answered
        same(read(), expected_charts[name], name)
    chart_parquet_ms = {name: median_ms(read, args.repeats, warmup=1) for name, read in charts.items()}

    figures = {
        "postgres_settings": settings_used,
        "decisions": args.decisions,
        "observations": args.observations,
        "prompts": args.prompts,
        "fill_seconds": round(fill_seconds, 2),
        "archive_seconds": round(archive_seconds, 2),
        "archive_rows_per_second": round(rows / archive_seconds),
        "archive_phases": {k: round(v, 2) for k, v in phases.items()},
        "archive_file_bytes": outcome.bytes,
        "postgres_table_bytes_before": pg_bytes,
        "peak_rss_mib_before_archive": round(rss_before, 1),
        "peak_rss_mib_after_archive": round(rss_after, 1),
        "prompt_page_reads_ms_postgres": {
            "median_over_keys": round(statistics.median(db_ms), 2),
            "min": round(min(db_ms), 2),
            "max": round(max(db_ms), 2),
        },
        "prompt_page_reads_ms_parquet": {
            "median_over_keys": round(statistics.median(parquet_ms), 2),
            "min": round(min(parquet_ms), 2),
            "max": round(max(parquet_ms), 2),
        },
        "audit_page_unfiltered_scan_ms_parquet": round(audit_scan_ms, 1),
        "chart_reads_ms": {
            name: {"postgres": round(chart_db_ms[name], 2), "parquet": round(chart_parquet_ms[name], 2)}
            for name in charts
        },
        "chart_reads_note": f"median of {args.repeats} reads each, the run's {p:,} prompts a step: energy and "
        "the learning-edge map read one step (a middle one), the heat map's ranking every step (its cache "
        "missed on purpose), its cells 50 prompts' rows at 5 steps a column",
        "note": "prompt page reads = prompt_observations + prompt_decisions of one prompt "
        f"({args.observations // p} observations + {args.decisions // p} decisions), median of "
        f"{args.repeats} reads per prompt, over {args.keys} prompts; rows/s = both tables' rows over the "
        "whole archive (export, verification, check, DELETE)",
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    path = write_results(args.name, figures, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
