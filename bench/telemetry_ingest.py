"""Telemetry ingestion on Postgres, through the real ingestion service.

Prints and writes bench/results/telemetry_ingest.json:
- step records of 1,024 observations plus their decisions through ``step_ingest``
  (delete-then-COPY, prompt states, usage ledger, one transaction each), in rows/s,
  beside Django's ``bulk_create`` of the same rows in the same run (aim: > 500,000 rows/s),
  and what reading a record's wire form (``StepRecord.from_wire``: the HTTP path) adds;
- the latency of the audit query for one prompt and of the learning-edge snapshot on a
  run of 10,000,000 decision rows (aim: < 50 ms each).

Needs DATABASE_URL pointing at a scratch Postgres database (it migrates it and adds a
team, a dataset and two runs). `scripts/test-services.sh` can start one:
    DATABASE_URL=postgres://... .venv/bin/python bench/telemetry_ingest.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.record import StepRecord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")


def step_record(step: int, n_prompts: int, decisions_per_prompt: int) -> StepRecord:
    from workers.record import BASE_COUNTS, DecisionRecord, Observation, StepRecord, StepSummary, TrainStats

    observations = tuple(Observation(
        prompt_key=f"bench:{(step * n_prompts + i) % 100_000}", group_size=8, successes=i % 9,
        pass_rate=(i % 9) / 8, response_entropy=0.5, prompt_entropy=0.7, energy=0.3, response_tokens=40,
        trained=i % 2 == 0, bucket="edge",
    ) for i in range(n_prompts))
    decisions = tuple(DecisionRecord(
        step=step, prompt_key=f"bench:{(step * n_prompts + i) % 100_000}", layer="pre_rollout",
        method="hive", action="kept", reason="hive.stage2_kept",
        scores={"entropy": 0.7, "threshold": 0.5, "candidates": 1536.0},
        message="kept by HIVE stage 2: prompt entropy 0.700 >= median 0.500 of 1536 candidates",
    ) for i in range(n_prompts) for _ in range(decisions_per_prompt))
    summary = StepSummary(
        **dict.fromkeys(BASE_COUNTS, 1),
        rollout_savings=0.1, effective_share_of_generated=0.5, flops_estimate=1.0, flops_uniform_estimate=1.0,
        device_seconds=0.0, seconds={"generate": 0.0}, train=TrainStats(reward_mean=0.5, loss=0.1))
    return StepRecord(step=step, epoch=0, summary=summary, observations=observations, decisions=decisions)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="step records ingested")
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--decisions-per-prompt", type=int, default=2)
    parser.add_argument("--audit-rows", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("error: set DATABASE_URL to a scratch Postgres database (see the docstring)")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from bench._timing import write_results
    from controlplane.accounts.services import team_create
    from controlplane.datasets.services import dataset_store
    from controlplane.runs.models import Run
    from controlplane.telemetry.models import PromptObservation, PromptState, SelectionDecision
    from controlplane.telemetry.services import step_ingest
    from workers.problems.dataset import PromptRecord
    from workers.record import StepRecord

    call_command("migrate", verbosity=0)
    team = team_create(name="Bench", owner_username="bench")
    dataset = dataset_store(team=team, name=f"bench-{time.time_ns()}", filename="bench", content_hash="0" * 64,
                            records=[PromptRecord(key="bench:0", prompt="1+1=", ground_truth="2", data_source="bench",
                                                  index=0, difficulty="", split="train", extra_info={})])

    def new_run(name: str) -> Run:
        return Run.objects.create(team=team, dataset=dataset, name=name, config={"steps": 1}, status="running")

    # 1. Ingestion through the service, beside bulk_create of the same rows.
    run = new_run("ingest")
    records = [step_record(s, args.prompts, args.decisions_per_prompt) for s in range(args.steps)]
    rows_per_step = args.prompts * (1 + args.decisions_per_prompt)
    service_times = []
    for record in records:
        start = time.perf_counter()
        step_ingest(run_id=run.id, record=record)
        service_times.append(time.perf_counter() - start)
    replay = timed(lambda: step_ingest(run_id=run.id, record=records[-1]), 3)  # a replayed step replaces
    assert PromptObservation.objects.filter(run=run).count() == args.steps * args.prompts
    # What the HTTP ingest adds before the service: reading and checking the wire form.
    wires = [record.to_wire() for record in records]
    read_times = timed(lambda: [StepRecord.from_wire(wire) for wire in wires], 3)

    orm_run = new_run("bulk_create")
    orm_times = []
    for record in records:
        start = time.perf_counter()
        with transaction.atomic():
            PromptObservation.objects.bulk_create([PromptObservation(
                run=orm_run, step=record.step, prompt_key=o.prompt_key, group_size=o.group_size,
                successes=o.successes, pass_rate=o.pass_rate, response_entropy=o.response_entropy,
                prompt_entropy=o.prompt_entropy, energy=o.energy, response_tokens=o.response_tokens,
                trained=o.trained, bucket=o.bucket) for o in record.observations], batch_size=5000)
            SelectionDecision.objects.bulk_create([SelectionDecision(
                run=orm_run, step=d.step, prompt_key=d.prompt_key, layer=d.layer, method=d.method,
                action=d.action, reason=d.reason, scores=dict(d.scores), message=d.message)
                for d in record.decisions], batch_size=5000)
        orm_times.append(time.perf_counter() - start)

    # 2. A run with --audit-rows decision rows, generated inside Postgres.
    audit = new_run("audit")
    prompts = 100_000
    with connection.cursor() as cursor:
        table = SelectionDecision._meta.db_table
        start = time.perf_counter()
        cursor.execute(
            f"INSERT INTO {table} (run_id, step, prompt_key, layer, method, action, reason, scores, message) "
            "SELECT %s, g / %s, 'bench:' || (g %% %s), 'pre_rollout', "
            "CASE WHEN g %% 3 = 0 THEN 'hive' ELSE 'lze' END, CASE WHEN g %% 2 = 0 THEN 'kept' ELSE 'skipped' END, "
            "'hive.stage2_kept', '{\"entropy\": 0.5}'::jsonb, 'kept by HIVE stage 2' "
            "FROM generate_series(0, %s - 1) AS g",
            [audit.id, prompts, prompts, args.audit_rows])
        fill_seconds = time.perf_counter() - start
        state_table = PromptState._meta.db_table
        cursor.execute(
            f"INSERT INTO {state_table} (run_id, prompt_key, bucket, pass_rate, response_entropy, prompt_entropy, "
            "visits, last_step) SELECT %s, 'bench:' || g, (ARRAY['too_easy','edge','too_hard','pruned'])[1 + g %% 4], "
            "(g %% 9) / 8.0, 0.5, 0.7, 3, 99 FROM generate_series(0, %s - 1) AS g", [audit.id, prompts])
        cursor.execute(f"ANALYZE {table}")
        cursor.execute(f"ANALYZE {state_table}")

    from controlplane.telemetry.models import SelectionDecision as D

    def audit_query() -> None:
        list(D.objects.filter(run=audit, prompt_key="bench:4242").order_by("step").values(
            "step", "method", "action", "message"))

    def edge_snapshot() -> None:
        from django.db.models import Count

        list(PromptState.objects.filter(run=audit).values("bucket").annotate(n=Count("id")))
        list(PromptState.objects.filter(run=audit, bucket="edge").order_by("prompt_key").values(
            "prompt_key", "pass_rate", "response_entropy")[:1000])

    audit_ms = [t * 1e3 for t in timed(audit_query, 21)]
    snapshot_ms = [t * 1e3 for t in timed(edge_snapshot, 21)]

    figures = {
        "ingest_rows_per_s": rows_per_step / statistics.median(service_times),
        "bulk_create_rows_per_s": rows_per_step / statistics.median(orm_times),
        "ingest_step_ms_median": statistics.median(service_times) * 1e3,
        "ingest_replayed_step_ms_median": statistics.median(replay) * 1e3,
        "bulk_create_step_ms_median": statistics.median(orm_times) * 1e3,
        "wire_read_step_ms_median": statistics.median(read_times) / len(wires) * 1e3,
        "audit_rows": args.audit_rows,
        "audit_fill_seconds": fill_seconds,
        "audit_query_ms_median": statistics.median(audit_ms),
        "edge_snapshot_ms_median": statistics.median(snapshot_ms),
    }
    print(f"telemetry ingestion on Postgres ({args.steps} steps of {args.prompts} observations + "
          f"{args.prompts * args.decisions_per_prompt} decisions = {rows_per_step} rows)")
    for name, value in figures.items():
        print(f"  {name:34s} {value:14,.1f}")
    print(f"wrote {write_results('telemetry_ingest', {'median': figures, 'rows_per_step': rows_per_step}, args.out)}")


if __name__ == "__main__":
    main()
