"""Telemetry ingestion on Postgres, through the real ingestion service and the real HTTP path.

Two step shapes, each ingested several times:
- ``step``: 1,024 observations + 2,048 decisions (3,072 rows), a training step of B = 1,024;
- ``epoch``: 1,000,000 decisions (LZE's epoch end pruning a whole pool, no observation), whose
  prompts already have a state (the update path of the prompt-state upsert).

For each it times, from the record as the engine hands it to its sink to the answer:
- ``in_process``: ``ControlPlaneSink.step`` (the local engine inside a worker): the service's
  one transaction (delete-then-COPY, prompt states, usage ledger, control answer) and commit;
- ``http``: ``HttpSink.step`` (the verl engine) against gunicorn with the production settings
  on 127.0.0.1: the spool written and fsynced, the body encoded, sent, read and checked, the
  same service, the answer. Its ratio to ``in_process`` is what the HTTP path costs on top.
Rows/s = rows of the record / seconds of its step; every figure is the median with the
minimum and maximum of the repeats. The shapes go in turn, each on both paths (in process, then
HTTP), each phase on a quiet database (a CHECKPOINT, and no autovacuum worker left from the
phase before: until 2026-12-03 the HTTP steps were timed after the epoch ends, while autovacuum
cleaned up after them). The record's build (the engine's side) is timed apart.

Prints and writes bench/results/telemetry_ingest.json (``--label`` names another file, e.g. a
run on an older tree). Postgres runs as tests/services.py starts it; name its settings:
    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/telemetry_ingest.py
It runs against older trees too (records built from row tuples; an HTTP sink without
``encode_event`` posts what it posts).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

SCORES = {"entropy": 0.7, "threshold": 0.5, "candidates": 1536.0}


def step_record(step: int, n_prompts: int, decisions_per_prompt: int) -> Any:
    """A training step: every prompt observed, each with ``decisions_per_prompt`` decisions."""
    from workers.record import BASE_COUNTS, DecisionRecord, Observation, StepRecord, StepSummary, TrainStats

    keys = [f"bench:{(step * n_prompts + i) % 100_000}" for i in range(n_prompts)]
    observations = tuple(Observation(
        prompt_key=key, group_size=8, successes=i % 9, pass_rate=(i % 9) / 8, response_entropy=0.5,
        prompt_entropy=0.7, energy=0.3, response_tokens=40, trained=i % 2 == 0, bucket="edge",
    ) for i, key in enumerate(keys))
    reasons = ("hive.stage1_kept", "hive.stage2_kept", "hive.stage2_skipped")
    decisions = tuple(DecisionRecord(
        step=step, prompt_key=key, layer="pre_rollout", method="hive", action="kept", reason=reasons[j],
        scores=SCORES, message="kept by HIVE stage 2: prompt entropy 0.700 >= median 0.500 of 1536 candidates",
    ) for key in keys for j in range(decisions_per_prompt))
    summary = StepSummary(
        **dict.fromkeys(BASE_COUNTS, 1),
        rollout_savings=0.1, effective_share_of_generated=0.5, flops_estimate=1.0, flops_uniform_estimate=1.0,
        device_seconds=0.0, seconds={"generate": 0.0}, train=TrainStats(reward_mean=0.5, loss=0.1))
    return StepRecord(step=step, epoch=0, summary=summary, observations=observations, decisions=decisions)


def epoch_record(step: int, n_pruned: int) -> Any:
    """An epoch end: ``n_pruned`` prompts pruned by LZE, nothing observed."""
    from workers.record import BASE_COUNTS, DecisionRecord, StepRecord, StepSummary, TrainStats

    decisions = tuple(DecisionRecord(
        step=step, prompt_key=f"pool:{i}", layer="post_rollout", method="lze", action="pruned",
        reason="lze.pruned", scores={"accuracy": 1.0, "streak": 3.0},
        message="pruned by LZE: solved in 3 epochs in a row (accuracy 1.000)") for i in range(n_pruned))
    summary = StepSummary(
        **dict.fromkeys(BASE_COUNTS, 0),
        rollout_savings=0.0, effective_share_of_generated=0.5, flops_estimate=0.0, flops_uniform_estimate=0.0,
        device_seconds=0.0, seconds={}, train=TrainStats())
    return StepRecord(step=step, epoch=1, summary=summary, decisions=decisions)


def rows_of(record: Any) -> int:
    return len(record.observations) + len(record.decisions)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def start_gunicorn(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn as docker-compose runs it (controlplane/gunicorn.conf.py, settings_production)."""
    from tests.services import free_port

    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings_production",
           "SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
           "EDGEPLANE_PLAIN_HTTP": "1", "EDGEPLANE_VAR_DIR": str(folder / "var"),
           "EDGEPLANE_WEB_BIND": f"127.0.0.1:{port}", "EDGEPLANE_WEB_WORKERS": "2", "EDGEPLANE_WEB_TIMEOUT": "300",
           "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}
    (folder / "metrics").mkdir(parents=True, exist_ok=True)
    log = (folder / "gunicorn.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "controlplane/gunicorn.conf.py",
                               "controlplane.wsgi"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.3)
    server.kill()
    sys.exit("error: gunicorn did not answer:\n" + (folder / "gunicorn.log").read_text()[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training-step records ingested per path")
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--decisions-per-prompt", type=int, default=2)
    parser.add_argument("--epoch-rows", type=int, default=1_000_000)
    parser.add_argument("--epoch-repeats", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP path")
    parser.add_argument("--label", default="", help="results file telemetry_ingest[_LABEL].json")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from bench._timing import bench_team, django_on_postgres, postgres_settings, write_results

    django_on_postgres()
    from django.db import connection

    from controlplane.runs.models import Run
    from controlplane.telemetry.models import PromptObservation, PromptState, SelectionDecision
    from controlplane.telemetry.services import ControlPlaneSink, token_issue

    pg_settings = postgres_settings()
    team, dataset = bench_team("bench")

    def new_run(name: str) -> Run:
        return Run.objects.create(team=team, dataset=dataset, name=name, config={"steps": 1}, status="running")

    def states(run: Run, keys: int, prefix: str) -> None:
        """The pool's prompts already have a state: an epoch end prunes prompts seen before."""
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {PromptState._meta.db_table} (run_id, prompt_key, bucket, pass_rate, "
                           "response_entropy, prompt_entropy, visits, last_step) SELECT %s, %s || g, 'too_easy', "
                           "1.0, 0.1, 0.2, 3, 0 FROM generate_series(0, %s - 1) AS g", [run.id, prefix, keys])

    # The records, built as the engines build them (their side of the cost, timed apart).
    # Each build timed alone: median (min-max), as the ingest figures.
    def built(make: Any, count: int) -> tuple[list[Any], list[float]]:
        records, seconds = [], []
        for i in range(count):
            start = time.perf_counter()
            records.append(make(i))
            seconds.append(time.perf_counter() - start)
        return records, seconds

    steps, step_build_s = built(lambda s: step_record(s, args.prompts, args.decisions_per_prompt), args.steps)
    epochs, epoch_build_s = built(lambda r: epoch_record(1 + r, args.epoch_rows), args.epoch_repeats)

    def ingest(sink_for, records: list[Any], shape: str) -> list[float]:
        """Seconds per record, each on the run ``sink_for`` answers for its shape."""
        sink, run = sink_for(shape)
        if shape == "epoch":
            states(run, args.epoch_rows, "pool:")
        times = []
        for record in records:
            start = time.perf_counter()
            answer = sink.step(record)
            times.append(time.perf_counter() - start)
            assert str(answer) == "continue", f"answered {answer}"
        decided = SelectionDecision.objects.filter(run=run).count()
        observed = PromptObservation.objects.filter(run=run).count()
        assert decided + observed == sum(rows_of(r) for r in records), (decided, observed)
        return times

    def in_process(shape: str) -> tuple[Any, Run]:
        run = new_run(f"in-process {shape}")
        return ControlPlaneSink(run.id), run

    def quiet() -> float:
        """Start a phase on a quiet database: a CHECKPOINT, then wait (up to 5 min) for the
        autovacuum workers that the last phase's writes woke (a million prompt states updated
        by an epoch end) to finish, so that no path is timed while another path's aftermath is
        cleaned up. Returns the seconds waited."""
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
            while time.perf_counter() - start < 300:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
                if not cursor.fetchone()[0]:
                    break
                time.sleep(0.5)
        return time.perf_counter() - start

    encoding = "json (the sink before encode_event)"
    refused: dict[str, str] = {}
    waited: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="edgeplane-ingest-bench-"))
    server, url = None, ""
    if not args.no_http:
        from workers.engines.verl import http_sink

        if hasattr(http_sink, "encode_event"):
            encoding = (f"JSON, wire version {steps[0].to_wire()['version']}, gzip level 1 over "
                        f"{http_sink.COMPRESS_OVER_BYTES} bytes")
        server, url = start_gunicorn(folder)

    def over_http(shape: str) -> tuple[Any, Run]:
        run = new_run(f"http {shape}")
        return http_sink.HttpSink(base_url=url, run_id=run.id, token=token_issue(run_id=run.id),
                                  run_dir=folder / f"run-{run.id}", request_timeout_s=300), run

    # Each shape on both paths, in process first, each phase from a quiet database: the steps of
    # both paths before any epoch end (whose aftermath slowed the HTTP steps timed after it).
    results: dict[str, Any] = {"in_process": {}, "http": {}}
    try:
        for shape, records in (("step", steps), ("epoch", epochs)):
            if not records:
                continue
            waited[f"in_process_{shape}"] = quiet()
            results["in_process"][shape] = ingest(in_process, records, shape)
            if server is None:
                continue
            waited[f"http_{shape}"] = quiet()
            try:
                results["http"][shape] = ingest(over_http, records, shape)
            except AssertionError as exc:  # an older tree's limits refuse a step: say so
                refused[shape] = f"not stored over HTTP ({exc}); gunicorn log: " + " | ".join(
                    (folder / "gunicorn.log").read_text().splitlines()[-3:])[:600]
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    waited["replay"] = quiet()
    replay_run = new_run("replay")
    sink = ControlPlaneSink(replay_run.id)
    sink.step(steps[0])
    replay = []
    for _ in range(5):  # a replayed step replaces its rows
        start = time.perf_counter()
        sink.step(steps[0])
        replay.append(time.perf_counter() - start)

    figures: dict[str, Any] = {}
    for path, shapes in results.items():
        for shape, times in shapes.items():
            rows = rows_of(steps[0] if shape == "step" else epochs[0])
            figures[f"{path}_{shape}_rows_per_s"] = spread([rows / t for t in times])
            figures[f"{path}_{shape}_ms"] = spread([t * 1e3 for t in times])
    for shape in results["http"]:
        ratios = [h / i for h, i in zip(sorted(results["http"][shape]), sorted(results["in_process"][shape]),
                                        strict=False)]
        figures[f"http_over_in_process_{shape}"] = {
            "median": statistics.median(results["http"][shape]) / statistics.median(results["in_process"][shape]),
            "min": min(ratios), "max": max(ratios), "n": len(ratios)}
    figures["in_process_step_replayed_ms"] = spread([t * 1e3 for t in replay])
    figures["record_build_ms"] = {"step": spread([t * 1e3 for t in step_build_s]),
                                  "epoch": spread([t * 1e3 for t in epoch_build_s]) if epoch_build_s else None}

    step_rows, epoch_rows = rows_of(steps[0]), args.epoch_rows
    print(f"telemetry ingestion on Postgres {pg_settings['server_version']} "
          f"({', '.join(f'{k}={v}' for k, v in pg_settings.items() if k != 'server_version')})")
    print(f"  step:  {args.prompts} observations + {args.prompts * args.decisions_per_prompt} decisions = "
          f"{step_rows} rows, {args.steps} records; epoch: {epoch_rows} pruned decisions, {args.epoch_repeats} records")
    print(f"  HTTP body: {encoding}")
    print("  each phase began on a quiet database (CHECKPOINT, no autovacuum worker); seconds waited: "
          + ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in waited.items()))
    for shape, why in refused.items():
        print(f"  http {shape}: {why}")
    for name, value in figures.items():
        if "median" in value:
            print(f"  {name:38s} {value['median']:>14,.1f}  (min {value['min']:,.1f}, max {value['max']:,.1f}, "
                  f"n={value['n']})")
        else:
            print(f"  {name:38s} {value}")
    name = "telemetry_ingest" + (f"_{args.label}" if args.label else "")
    print(f"wrote {write_results(name, {'figures': figures, 'refused': refused, 'postgres': pg_settings, 'http_body': encoding, 'quiet_waits_s': waited, 'order': 'per shape: in process, then HTTP', 'rows': {'step': step_rows, 'epoch': epoch_rows}, 'denominator': 'rows of one record / seconds from sink.step(record) to its answer'}, args.out)}")  # noqa: E501


if __name__ == "__main__":
    main()
