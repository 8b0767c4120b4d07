"""Audit and learning-edge reads at 100,000,000 decision rows, one partition per run.

Fills ``--runs`` runs of ``--rows-per-run`` selection decisions each (generated inside Postgres
with generate_series, through the partitioned parent table: each row routed to its run's
partition, every index kept up) and ``--prompts`` prompt states per run, timing the fill apart;
then times the reads the pages make, through the real selector functions, on runs drawn at random
(median, p95, min and max of ``--repeats``); then times dropping one run's rows
(``telemetry.partitions.run_rows_drop``: its partitions detached). Drops everything it made at the end
(``dropped_partitions_purge`` frees the detached tables).

The fill stops early when ``--fill-budget-s`` would be exceeded: the results then say how many
rows were measured, and the projected full fill time is labelled as a projection.

Run with the durable settings (fsync on):

    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/telemetry_scale.py
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's modules first

from controlplane.telemetry.counts import counts_select_sql  # Arrow only: no Django needed

# One run's decisions, made once into a staging table; each run's partition is then filled from it.
# Method and action by position i in a step of --per-step: hive kept/skipped 40 %, hora allocated 20 %,
# rlzvp shaped 20 %, lze pruned 20 % less one row a step: lze restored (the rare action).
STAGING_SQL = """
CREATE UNLOGGED TABLE bench_decision_rows AS
SELECT g / %(per_step)s AS step, 'bench:' || (g %% %(prompts)s) AS prompt_key,
       CASE WHEN g %% 10 < 4 THEN 'pre_rollout' WHEN g %% 10 < 6 THEN 'allocation' ELSE 'post_rollout' END AS layer,
       CASE WHEN g %% %(per_step)s = %(per_step)s - 1 THEN 'lze'
            WHEN g %% 10 < 4 THEN 'hive' WHEN g %% 10 < 6 THEN 'hora' WHEN g %% 10 < 8 THEN 'rlzvp' ELSE 'lze' END
            AS method,
       CASE WHEN g %% %(per_step)s = %(per_step)s - 1 THEN 'restored'
            WHEN g %% 10 < 4 THEN (CASE WHEN g %% 2 = 0 THEN 'kept' ELSE 'skipped' END)
            WHEN g %% 10 < 6 THEN 'allocated' WHEN g %% 10 < 8 THEN 'shaped' ELSE 'pruned' END AS action,
       CASE WHEN g %% 10 < 4 THEN 'hive.stage2_kept' WHEN g %% 10 < 6 THEN 'hora.allocated'
            WHEN g %% 10 < 8 THEN 'rlzvp.shaped' ELSE 'lze.zero_variance' END AS reason,
       jsonb_build_object('successes', g %% 5, 'extra', g %% 3, 'entropy', 0.5) AS scores,
       'kept by HIVE stage 2: entropy 0.50 above the threshold 0.31 of this step'::text AS message, g
FROM generate_series(0, %(rows)s - 1) AS g ORDER BY g
"""

COLUMNS = "step, prompt_key, layer, method, action, reason, scores, message"

# The run's decisions counted per step (StepDecisionCount, which ingestion writes with each step and
# the decisions and HORA charts read), counted once from the staging rows and copied to each run.
COUNTS_STAGING_SQL = "CREATE UNLOGGED TABLE bench_decision_counts AS " + counts_select_sql(
    "bench_decision_rows", "postgresql", by_run=False)
COUNTS_SQL = """
INSERT INTO telemetry_stepdecisioncount (run_id, step, method, action, successes, decisions, extra)
SELECT %s, step, method, action, successes, decisions, extra FROM bench_decision_counts
"""


def fill_run(cursor, run_id: int, *, bulk: bool) -> None:
    """The run's decisions from the staging table. bulk: into a fresh table attached as the
    run's partition afterwards (its indexes built once, by ATTACH), then vacuumed, as autovacuum
    leaves a finished run; else through the parent, every index kept up row by row (a live run)."""
    from controlplane.telemetry.partitions import partition_name

    table = "runs_selectiondecision"
    # A block of ids reserved from the table's identity in one call (a nextval a row costs 6x the insert).
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    sequence = cursor.fetchone()[0]
    cursor.execute("SELECT count(*) FROM bench_decision_rows")
    rows = int(cursor.fetchone()[0])
    cursor.execute("SELECT setval(%s, nextval(%s) + %s - 1)", [sequence, sequence, rows])
    first = int(cursor.fetchone()[0]) - rows + 1
    ids = f"{first} + g"
    if not bulk:
        cursor.execute(
            f"INSERT INTO {table} (id, run_id, {COLUMNS}) SELECT {ids}, %s, {COLUMNS} FROM bench_decision_rows",
            [run_id],
        )
        return
    name = partition_name(table, run_id)
    cursor.execute(f'DROP TABLE "{name}"')  # the empty partition run_create made
    cursor.execute(
        f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS, '
        f'CONSTRAINT "{name}_bound" CHECK (run_id IS NOT NULL AND run_id = {run_id}))'
    )
    cursor.execute(
        f'INSERT INTO "{name}" (id, run_id, {COLUMNS}) SELECT {ids}, %s, {COLUMNS} FROM bench_decision_rows', [run_id]
    )
    cursor.execute(f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES IN ({run_id})')
    cursor.execute(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_bound"')


STATE_SQL = """
INSERT INTO runs_promptstate (run_id, prompt_key, bucket, pass_rate, response_entropy, prompt_entropy, visits,
                              last_step)
SELECT %(run)s, 'bench:' || k, (ARRAY['too_easy', 'edge', 'too_hard', 'pruned', 'stale'])[1 + k %% 5],
       (k %% 9) / 8.0, 0.3 + (k %% 7) / 10.0, 0.2, 1 + k %% 30, %(steps)s - 1 - (k %% 40)
FROM generate_series(0, %(prompts)s - 1) AS k
"""


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "min_ms": times[0],
        "max_ms": times[-1],
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rows-per-run", type=int, default=500_000)
    parser.add_argument("--per-step", type=int, default=1000, help="decisions a step")
    parser.add_argument("--prompts", type=int, default=20_000, help="prompts a run (and prompt states a run)")
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--fill-budget-s", type=float, default=1500.0)
    parser.add_argument("--drops", type=int, default=5, help="runs whose rows are dropped, timed")
    parser.add_argument("--name", default="telemetry_scale")
    args = parser.parse_args()
    from bench._timing import django_on_postgres, postgres_settings, write_results

    django_on_postgres()
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from controlplane.accounts.services import team_create
    from controlplane.datasets.services import dataset_store
    from controlplane.runs import selectors as run_selectors
    from controlplane.runs.models import Run
    from controlplane.telemetry.partitions import dropped_partitions_purge, run_partitions, run_rows_drop
    from frontend import selectors as sel
    from workers.problems.dataset import PromptRecord

    free_gb = shutil.disk_usage("/").free / 1e9
    print(f"disk free: {free_gb:.1f} GB", flush=True)
    settings = postgres_settings()
    print("postgres settings:", settings, flush=True)

    team = team_create(name=f"Scale {time.time_ns()}", owner_username=f"scale{time.time_ns()}")
    dataset = dataset_store(
        team=team,
        name=f"scale-{time.time_ns()}",
        filename="bench",
        content_hash="0" * 64,
        records=[
            PromptRecord(
                key="bench:0",
                prompt="1+1=",
                ground_truth="2",
                data_source="bench",
                index=0,
                difficulty="",
                split="train",
                extra_info={},
            )
        ],
    )
    steps = args.rows_per_run // args.per_step

    # -- fill ---------------------------------------------------------------------------------------
    runs: list[Run] = []
    fill_seconds: list[float] = []
    vacuum_seconds: list[float] = []
    state_seconds: list[float] = []
    fill_start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_decision_rows")
        cursor.execute(STAGING_SQL, {"per_step": args.per_step, "prompts": args.prompts, "rows": args.rows_per_run})
        cursor.execute("DROP TABLE IF EXISTS bench_decision_counts")
        cursor.execute(COUNTS_STAGING_SQL)
    staging_seconds = time.perf_counter() - fill_start
    for i in range(args.runs):
        elapsed = time.perf_counter() - fill_start
        per_run = (
            statistics.mean(a + b + c for a, b, c in zip(fill_seconds, vacuum_seconds, state_seconds))
            if fill_seconds
            else 0.0
        )
        if fill_seconds and elapsed + per_run * 1.2 > args.fill_budget_s:
            print(f"fill budget reached after {i} runs", flush=True)
            break
        run = Run.objects.create(
            team=team,
            dataset=dataset,
            name=f"scale-{i}",
            config={"steps": steps},
            status="succeeded",
            steps_completed=steps,
        )
        assert run_partitions(run.id), "the run got no partition"
        with connection.cursor() as cursor:
            start = time.perf_counter()
            with transaction.atomic():
                fill_run(cursor, run.id, bulk=True)
                cursor.execute(COUNTS_SQL, [run.id])
            fill_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            cursor.execute(f'VACUUM (ANALYZE) "runs_selectiondecision_run{run.id}"')
            vacuum_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            with transaction.atomic():
                cursor.execute(STATE_SQL, {"run": run.id, "steps": steps, "prompts": args.prompts})
            state_seconds.append(time.perf_counter() - start)
        runs.append(run)
        if i % 10 == 0 or i == args.runs - 1:
            done = (i + 1) * args.rows_per_run
            print(
                f"run {i + 1}/{args.runs}: {done:,} decision rows, {time.perf_counter() - fill_start:.0f} s, "
                f"last run {fill_seconds[-1]:.1f} s fill + {vacuum_seconds[-1]:.1f} s vacuum "
                f"({args.rows_per_run / fill_seconds[-1]:,.0f} rows/s)",
                flush=True,
            )
    # One more run filled through the parent, as ingestion writes (every index kept up, nothing vacuumed):
    # the reads are timed on it too, as on a live run.
    live = Run.objects.create(
        team=team, dataset=dataset, name="scale-live", config={"steps": steps}, status="running", steps_completed=steps
    )
    with connection.cursor() as cursor:
        start = time.perf_counter()
        with transaction.atomic():
            fill_run(cursor, live.id, bulk=False)
            cursor.execute(COUNTS_SQL, [live.id])
        live_fill_seconds = time.perf_counter() - start
        with transaction.atomic():
            cursor.execute(STATE_SQL, {"run": live.id, "steps": steps, "prompts": args.prompts})
        cursor.execute(f'ANALYZE "runs_selectiondecision_run{live.id}"')
        cursor.execute("DROP TABLE bench_decision_rows")
        cursor.execute("SELECT count(*) FROM bench_decision_counts")
        counts_per_run = int(cursor.fetchone()[0])
        cursor.execute("DROP TABLE bench_decision_counts")
    fill_total = time.perf_counter() - fill_start
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE runs_selectiondecision")  # the parent's statistics (partitions have theirs)
        cursor.execute("VACUUM ANALYZE runs_promptstate")
        cursor.execute("VACUUM ANALYZE telemetry_stepdecisioncount")
    analyze_seconds = time.perf_counter() - start
    # The fill's dirty pages written out now (timed apart), as a store that has settled has them, so
    # that no checkpoint the fill's WAL forces can run during the timed reads. (On 2026-12-02 one
    # run's reads were all 2-5x slower at p95 than the next's; this CHECKPOINT then took 2.6 s, so
    # it did not explain that run: its ANALYZE was 3x slower too, the disk was.)
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
    checkpoint_seconds = time.perf_counter() - start
    rows = (len(runs) + 1) * args.rows_per_run
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        db_bytes = int(cursor.fetchone()[0])
        cursor.execute("SELECT count(*) FROM runs_selectiondecision")  # the rows are really there
        counted = int(cursor.fetchone()[0])
    assert counted == rows, (counted, rows)
    fill = {
        "runs": len(runs),
        "decision_rows": rows,
        "rows_per_run": args.rows_per_run,
        "steps_per_run": steps,
        "decisions_per_step": args.per_step,
        "prompt_states": len(runs) * args.prompts,
        "step_decision_counts": (len(runs) + 1) * counts_per_run,
        "staging_s": staging_seconds,
        "bulk_fill_s": sum(fill_seconds),
        "bulk_fill_rows_per_s": len(runs) * args.rows_per_run / sum(fill_seconds),
        "bulk_fill_how": "per run: a fresh table filled from the staging rows, ATTACHed as the run's partition "
        "(indexes built by ATTACH), then VACUUM (ANALYZE) as autovacuum leaves a finished run",
        "per_run_fill_s_median": statistics.median(fill_seconds),
        "vacuum_s": sum(vacuum_seconds),
        "live_run_fill_through_parent_s": live_fill_seconds,
        "live_run_fill_through_parent_rows_per_s": args.rows_per_run / live_fill_seconds,
        "prompt_state_fill_s": sum(state_seconds),
        "fill_wall_s": fill_total,
        "analyze_s": analyze_seconds,
        "checkpoint_after_fill_s": checkpoint_seconds,
        "database_gb": db_bytes / 1e9,
        "full_target_rows": args.runs * args.rows_per_run,
    }
    if len(runs) < args.runs:
        fill["projected_full_fill_s (projection, not measured)"] = (fill_total / len(runs)) * args.runs
    print("fill:", fill, flush=True)

    # -- reads -----------------------------------------------------------------------------------------
    rng = random.Random(16)
    measured = runs[: -args.drops] if len(runs) > args.drops else runs

    def pick() -> Run:
        return rng.choice(measured)

    def prompt() -> str:
        return f"bench:{rng.randrange(args.prompts)}"

    last = steps - 1
    queries: dict[str, Callable[[], Any]] = {
        "prompt_audit (frontend.selectors.prompt_decisions)": lambda: sel.prompt_decisions(pick(), prompt()),
        "audit_page unfiltered first page": lambda: sel.audit_page(pick()),
        "audit_page method=hive action=skipped": lambda: sel.audit_page(pick(), method="hive", action="skipped"),
        "audit_page method=hora action=allocated step 10-step window": lambda: sel.audit_page(
            pick(), method="hora", action="allocated", step_min=(s := rng.randrange(steps - 10)), step_max=s + 10
        ),
        "audit_page action=restored (1 row a step)": lambda: sel.audit_page(pick(), method="lze", action="restored"),
        "audit_page prompt filter": lambda: sel.audit_page(pick(), prompt=prompt()),
        "audit_page deep cursor (mid-run)": lambda: sel.audit_page(pick(), cursor=f"{steps // 2}.0"),
        "audit_page chart click (one step, one action)": lambda: sel.audit_page(
            pick(), action="pruned", step_min=(s := rng.randrange(steps)), step_max=s
        ),
        "recent_decisions (run page)": lambda: sel.recent_decisions(pick()),
        "decisions chart: action_count_rows 100 steps (first load)": lambda: sel.action_count_rows(
            pick(), last - sel.AGGREGATE_STEP_PAGE, last
        ),
        "decisions chart: action_count_rows 1 step (poll)": lambda: sel.action_count_rows(pick(), last - 1, last),
        "hora chart: hora_rows 100 steps": lambda: sel.hora_rows(pick(), last - sel.AGGREGATE_STEP_PAGE, last),
        "hora chart: hora_rows 1 step (poll)": lambda: sel.hora_rows(pick(), last - 1, last),
        "hora chart: hora_rows whole run in 100 columns": lambda: sel.hora_rows(
            pick(), -1, last, steps_per_column=-(-steps // 100)
        ),
        "learning edge: edge_points (current states)": lambda: sel.edge_points(pick(), None),
        "learning edge: prompt_bucket_counts": lambda: run_selectors.prompt_bucket_counts(pick()),
        "api decisions first page (order by id)": lambda: list(
            run_selectors.decisions_query(pick()).order_by("id")[:101]
        ),
    }
    live_queries: dict[str, Callable[[], Any]] = {
        "LIVE run (unvacuumed, filled through the parent): action_count_rows 100 steps": lambda: sel.action_count_rows(
            live, last - sel.AGGREGATE_STEP_PAGE, last
        ),
        "LIVE run: audit_page method=hive action=skipped": lambda: sel.audit_page(
            live, method="hive", action="skipped"
        ),
        "LIVE run: prompt_audit": lambda: sel.prompt_decisions(live, prompt()),
        "LIVE run: recent_decisions": lambda: sel.recent_decisions(live),
        "LIVE run: edge_points (current states)": lambda: sel.edge_points(live, None),
        "LIVE run: hora_rows 100 steps": lambda: sel.hora_rows(live, last - sel.AGGREGATE_STEP_PAGE, last),
    }
    queries.update(live_queries)
    reads: dict[str, Any] = {}
    for name, fn in queries.items():
        with CaptureQueriesContext(connection) as captured:
            fn()
        plans = []
        with connection.cursor() as cursor:
            for q in captured.captured_queries:
                if not q["sql"].lstrip().upper().startswith("SELECT"):
                    continue
                cursor.execute("EXPLAIN " + q["sql"])
                plans.append(
                    " | ".join(
                        line[0].strip()
                        for line in cursor.fetchall()
                        if "Scan" in line[0] or "Sort" in line[0] or "Limit" in line[0]
                    )[:600]
                )
        figures = timed(fn, args.repeats)
        figures["plan"] = plans
        reads[name] = figures
        print(
            f"{name}: median {figures['median_ms']:.2f} ms, p95 {figures['p95_ms']:.2f} ms "
            f"(min {figures['min_ms']:.2f}, max {figures['max_ms']:.2f}, n={args.repeats})",
            flush=True,
        )
        for plan in plans:
            print("   plan:", plan, flush=True)

    # -- dropping a run's rows ------------------------------------------------------------------------------
    drops = []
    for run in runs[-args.drops :] if len(runs) > args.drops else []:
        start = time.perf_counter()
        with transaction.atomic():
            run_rows_drop(run.id)
        drops.append((time.perf_counter() - start) * 1e3)
        assert not run_partitions(run.id)
    drop = {
        "rows_per_run_dropped": args.rows_per_run,
        "runs_dropped": len(drops),
        "times_ms": drops,
        "median_ms": statistics.median(drops) if drops else None,
    }
    print("run_rows_drop:", drop, flush=True)

    write_results(
        args.name,
        {
            "what": "reads through the real selectors on one partition per run; fill timed apart",
            "postgres_settings": settings,
            "pg_settings_env": os.environ.get("EDGEPLANE_PG_SETTINGS", ""),
            "disk_free_gb_at_start": free_gb,
            "fill": fill,
            "reads": reads,
            "run_rows_drop": drop,
        },
    )

    # -- clean up ---------------------------------------------------------------------------------------------
    start = time.perf_counter()
    for run in [*runs, live]:
        with transaction.atomic():
            run.delete()  # detaches its partitions (telemetry.signals), cascades its prompt states
    dropped_partitions_purge()
    print(f"cleaned up in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
