"""The prompt-state upsert of an epoch end, alone: a million prompts pruned, each already with a state.

The statement ``telemetry.services._update_prompt_states`` runs (``state_upsert_sql``: the
staging table's rows deleted and returned into ``INSERT ... ON CONFLICT (run_id, prompt_key) DO
UPDATE``), timed on a copy of the real table (``CREATE TABLE ... (LIKE runs_promptstate INCLUDING
ALL)``: its columns, constraints and indexes) holding ``--states`` states of the run and as many
of another run, with variants:
- ``as_now``: the table as the migrations make it;
- ``no_bucket_index``: without the (run, bucket) index;
- ``sorted``: the staging rows read in key order;
- ``update_from``: ``UPDATE ... FROM`` the staging table instead (every state exists);
- ``icu_key``: the prompt key compared by ICU en-US rules (what a database initialised with
  en_US.UTF-8 compares with) instead of byte by byte.
Each variant is timed ``--repeats`` times on a fresh fill (VACUUM ANALYZE and CHECKPOINT before),
statement and commit apart; ``--explain`` adds ``EXPLAIN (ANALYZE, BUFFERS, WAL)`` of the
``as_now`` statement (buffers and WAL a state). Prints and writes bench/results/state_upsert.json.
    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/state_upsert.py --explain
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

VARIANTS = ("as_now", "no_bucket_index", "sorted", "update_from", "icu_key")
TABLE = "bench_promptstate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=1_000_000, help="states of the run, all pruned at once")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from bench._timing import django_on_postgres, postgres_settings, write_results

    django_on_postgres()
    from django.db import connection, transaction

    from controlplane.telemetry.models import PromptState
    from controlplane.telemetry.services import STATE_COLUMNS, STATE_STAGING, STATE_STAGING_CREATE, state_upsert_sql

    names = ", ".join(STATE_COLUMNS)
    index_names = {i.name for i in PromptState._meta.indexes}

    def q(sql: str, params: list[Any] | None = None) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None

    def fill(variant: str) -> None:
        q(f"DROP TABLE IF EXISTS {TABLE}")
        q(f"CREATE TABLE {TABLE} (LIKE {PromptState._meta.db_table} INCLUDING ALL)")
        if variant == "no_bucket_index":
            [bucket_index] = [n for (n,) in q("SELECT indexname FROM pg_indexes WHERE tablename = %s AND "
                                              "indexdef LIKE %s", [TABLE, "%(run_id, bucket)%"])]
            q(f"DROP INDEX {bucket_index}")
        if variant == "icu_key":
            q(f'ALTER TABLE {TABLE} ALTER COLUMN prompt_key TYPE varchar(255) COLLATE "en-x-icu"')
        q(f"INSERT INTO {TABLE} ({names}) SELECT r, 'pool:' || g, 'too_easy', 1.0, 0.1, 0.2, 3, 0 "
          "FROM generate_series(0, %s - 1) g, (VALUES (1), (2)) v(r)", [args.states])
        q(f"VACUUM ANALYZE {TABLE}")
        q("CHECKPOINT")

    def staged(step: int) -> None:
        q(STATE_STAGING_CREATE)  # the service's own staging table
        q(f"INSERT INTO {STATE_STAGING} SELECT 1, 'pool:' || g, 'pruned', NULL, NULL, NULL, 0, %s "
          "FROM generate_series(0, %s - 1) g", [step, args.states])

    def statement(variant: str) -> str:
        if variant == "update_from":
            return (f"UPDATE {TABLE} t SET bucket = s.bucket, pass_rate = COALESCE(s.pass_rate, t.pass_rate), "
                    "response_entropy = COALESCE(s.response_entropy, t.response_entropy), "
                    "prompt_entropy = COALESCE(s.prompt_entropy, t.prompt_entropy), "
                    "visits = t.visits + CASE WHEN s.last_step > t.last_step THEN s.visits ELSE 0 END, "
                    f"last_step = s.last_step FROM {STATE_STAGING} s WHERE t.run_id = s.run_id "
                    "AND t.prompt_key = s.prompt_key AND s.last_step >= t.last_step")
        statement = state_upsert_sql(TABLE)  # the service's own
        return statement.replace(" FROM staged", " FROM staged ORDER BY run_id, prompt_key") if variant == "sorted" \
            else statement

    results: dict[str, Any] = {}
    for variant in args.variants.split(","):
        runs = []
        for repeat in range(args.repeats):
            fill(variant)
            with transaction.atomic():
                staged(1 + repeat)
                began = time.perf_counter()
                q(statement(variant))
                done = time.perf_counter()
            runs.append({"statement_s": done - began, "commit_s": time.perf_counter() - done})
        results[variant] = {"statement_s": [r["statement_s"] for r in runs],
                            "commit_s": [r["commit_s"] for r in runs],
                            "statement_median_s": statistics.median(r["statement_s"] for r in runs)}
        statements = ", ".join(f"{r['statement_s']:.2f}" for r in runs)
        commits = ", ".join(f"{r['commit_s'] * 1e3:.0f}" for r in runs)
        print(f"  {variant:16s} statement {statements} s; commit {commits} ms", flush=True)
    if args.explain:
        fill("as_now")
        with transaction.atomic():
            staged(1)
            plan = [row[0] for row in q("EXPLAIN (ANALYZE, BUFFERS, WAL) " + statement("as_now"))]
            transaction.set_rollback(True)
        results["as_now_explain"] = plan
        print("\n".join("    " + line for line in plan))
    q(f"DROP TABLE IF EXISTS {TABLE}")
    print(f"wrote {write_results('state_upsert', {'states': args.states, 'indexes_of_the_model': sorted(index_names), 'variants': results, 'postgres': postgres_settings(), 'denominator': 'seconds of the one statement updating --states existing states (the commit apart)'}, args.out)}")  # noqa: E501


if __name__ == "__main__":
    main()
