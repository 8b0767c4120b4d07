"""The budget answer at a growing usage ledger: what a step costs when its team has a budget.

Every step books its device-seconds in the usage ledger (one entry a step) and, when the team has
a budget, answers whether it is used up (``budget_status``, for the control answer and the budget
notification check). A team of 100 runs stepping for a month holds millions of entries. For a
ledger of ``--sizes`` entries (100 runs, spread evenly over the budget period's first 30 days),
this times:
- ``budget_status``: the team's used device-hours, as the step's answer reads them;
- ``ledger_sum``: the same figure summed over the period's ledger entries (the query
  budget_status made before UsageDay; the denominator of the speed-up);
- ``step``: one 3,072-row step of bench/telemetry_ingest.py in process (``ControlPlaneSink``),
  the team with a budget, from the record to the answer.
Each figure is the median (min-max) of the repeats; the fill and UsageDay's rebuild are timed apart.

Prints and writes bench/results/budget_answer[_LABEL].json. It runs on older trees too (no
UsageDay: nothing to rebuild); Postgres as tests/services.py starts it:
    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/budget_answer.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

RUNS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="ledger entries, comma separated")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=15, help="steps ingested at each size")
    parser.add_argument("--label", default="", help="results file budget_answer[_LABEL].json")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from bench._timing import bench_team, django_on_postgres, postgres_settings, times_ms, write_results

    django_on_postgres()
    from django.db import connection
    from django.db.models import Sum
    from django.utils import timezone

    from bench.telemetry_ingest import spread, step_record
    from controlplane.budgets import services as budget_services
    from controlplane.budgets.models import UsageEntry
    from controlplane.budgets.selectors import budget_status
    from controlplane.budgets.services import budget_set
    from controlplane.runs.models import Run
    from controlplane.telemetry.services import ControlPlaneSink

    rebuild = getattr(budget_services, "usage_days_rebuild", None)  # None: a tree before UsageDay
    team, dataset = bench_team("budget-bench")
    period_start = timezone.localdate() - dt.timedelta(days=30)
    budget_set(team=team, period_start=period_start, period_end=period_start + dt.timedelta(days=60),
               limit_device_hours=1e9)
    runs = [Run.objects.create(team=team, dataset=dataset, name=f"r{i}", config={"steps": 1}, status="running").id
            for i in range(RUNS)]
    start = timezone.make_aware(dt.datetime.combine(period_start, dt.time()))
    end = timezone.make_aware(dt.datetime.combine(period_start + dt.timedelta(days=60), dt.time()))

    def ledger_sum() -> float:
        return UsageEntry.objects.filter(team=team, recorded_at__gte=start, recorded_at__lt=end).aggregate(
            s=Sum("device_seconds"))["s"] or 0.0

    figures: dict[str, Any] = {}
    step_number = 1_000_000  # the steps ingested go after the filled ones
    for size in (int(s) for s in args.sizes.split(",")):
        per_run = size // RUNS
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE budgets_usageentry")
            # per_run steps a run, evenly over the period's first 30 days
            cursor.execute("INSERT INTO budgets_usageentry (team_id, run_id, kind, step, device_seconds, "
                           "uniform_device_seconds, recorded_at) SELECT %s, r, 'step', s, 1.0, 2.0, "
                           "%s + (s * 30 * 86400.0 / %s) * interval '1 second' "
                           "FROM unnest(%s::bigint[]) r, generate_series(0, %s - 1) s",
                           [team.id, start, per_run, runs, per_run])
            cursor.execute("VACUUM ANALYZE budgets_usageentry")
        fill_s = time.perf_counter() - began
        began = time.perf_counter()
        days = rebuild(team_id=team.id) if rebuild else None
        rebuild_s = time.perf_counter() - began
        if days is not None:
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE budgets_usageday")
        assert abs(budget_status(team).used_device_hours * 3600 - ledger_sum()) < 1e-6 * size, "answers differ"
        sink = ControlPlaneSink(runs[0])
        records = [step_record(step_number + i, 1024, 2) for i in range(args.steps + 1)]
        step_number += len(records)
        sink.step(records[0])  # warm
        step_ms = []
        for record in records[1:]:
            began_step = time.perf_counter()
            assert str(sink.step(record)) == "continue"
            step_ms.append((time.perf_counter() - began_step) * 1e3)
        figures[str(size)] = {
            "ledger_entries": size, "usage_days": days, "fill_s": fill_s, "usage_days_rebuild_s": rebuild_s,
            "budget_status_ms": spread(times_ms(lambda: budget_status(team), args.repeats)),
            "ledger_sum_ms": spread(times_ms(ledger_sum, args.repeats)),
            "step_ms": spread(step_ms),
        }
        f = figures[str(size)]
        print(f"  {size:>9,} ledger entries ({days if days is not None else 'no'} usage days): budget_status "
              f"{f['budget_status_ms']['median']:.2f} ms, ledger sum {f['ledger_sum_ms']['median']:.2f} ms, "
              f"step {f['step_ms']['median']:.1f} ms ({f['step_ms']['min']:.1f}-{f['step_ms']['max']:.1f}); "
              f"fill {fill_s:.1f} s, rebuild {rebuild_s:.2f} s", flush=True)
    name = "budget_answer" + (f"_{args.label}" if args.label else "")
    print(f"wrote {write_results(name, {'figures': figures, 'runs': RUNS, 'postgres': postgres_settings(), 'tree_has_usage_days': rebuild is not None, 'denominator': 'ledger_sum_ms: the period ledger entries summed, the query budget_status made before UsageDay; step_ms: one 3,072-row step in process, from the record to the answer'}, args.out)}")  # noqa: E501


if __name__ == "__main__":
    main()
