"""Load test: concurrent runs posting steps over HTTP to the production server, dashboards polling.

The production web server as docker-compose.yml's ``web`` service runs it (gunicorn with
controlplane/gunicorn.conf.py, controlplane.settings_production, collected static files,
plain http for local hosts) on 127.0.0.1, against Postgres and Redis. Locust (bench/locustfile.py)
runs ``--runs`` engines, each posting its run's step records in order (1,024 observations +
2,048 decisions a step by default, bench/telemetry_ingest.py's record, encoded as the verl HTTP
sink encodes it) as fast as the server answers, and ``--viewers`` signed-in dashboards polling a
run page's chart endpoints with their cursors every 2 s, for ``--run-time`` seconds.

Then the rows are checked: for every run, the stored step summaries are exactly the steps that got
a 2xx answer (none lost, none doubled), and every such step holds exactly its observations and
decisions. Prints the figures and writes bench/results/<--name>.json (steps/s and rows/s held,
latency percentiles of ingest and of the chart endpoints from Locust's measurements, failures,
the rows check, gunicorn's workers and threads, the Postgres settings read back from the server).

    EDGEPLANE_PG_SETTINGS="shared_buffers=2GB wal_buffers=128MB max_wal_size=16GB checkpoint_timeout=30min" \\
        .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/load_test.py
    .venv/bin/python bench/load_test.py --quick     # ~30 s; starts its own Postgres (fsync on) and Redis

Without DATABASE_URL / CELERY_BROKER_URL it starts throwaway ones itself (tests/services.py,
fsync on). It runs the code of the tree it lives in. Exits 1 when a request failed or the rows
check found a difference.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

RUN_CONFIG = {
    "steps": 100_000,
    "batch_size": 4,
    "group_size": 4,
    "selectors": {"hive": {}, "hora": {"n0": 2}, "rlzvp": {}, "lze": {"backward": False, "prune": True}},
}


def say(message: str) -> None:
    print(f"load_test: {message}", flush=True)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


# -- the data: a team, a dataset, viewers, running runs with their tokens -------------------------------------
def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from controlplane.accounts.models import Role
    from controlplane.accounts.services import membership_set, team_create
    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.services import run_claim, run_create
    from controlplane.telemetry.services import run_started_ingest, token_issue

    start = time.monotonic()
    call_command("migrate", verbosity=0)
    say(f"migrated in {time.monotonic() - start:.1f} s")
    suffix = secrets.token_hex(3)
    team = team_create(name=f"Load {suffix}", owner_username=f"load-owner-{suffix}")
    dataset = dataset_import_builtin(team=team, task="add", n_train=64, n_test=8, name=f"load-{suffix}")
    runs = []
    for i in range(args.runs):
        run = run_create(team=team, dataset=dataset, name=f"load-{i:03d}", config=dict(RUN_CONFIG))
        attempt = run_claim(run_id=run.id, worker=f"load-test:{i}")
        assert attempt is not None, f"run {run.id} could not be claimed"
        run_started_ingest(run_id=run.id, resumed_from_step=None, attempt=attempt.number)  # starting -> running
        runs.append({"id": run.id, "token": token_issue(run_id=run.id), "attempt": attempt.number})
    viewers = []
    User = get_user_model()
    for i in range(args.viewers):
        username, password = f"viewer-{suffix}-{i:02d}", secrets.token_urlsafe(16)
        User.objects.create_user(username=username, password=password)
        membership_set(team=team, username=username, role=Role.VIEWER)
        # spread over the runs: viewer i watches run i * runs / viewers
        viewers.append(
            {"username": username, "password": password, "run_id": runs[i * len(runs) // args.viewers]["id"]}
        )
    plan = {
        "runs": runs,
        "viewers": viewers,
        "prompts": args.prompts,
        "decisions_per_prompt": args.decisions_per_prompt,
        "poll_seconds": args.poll_seconds,
    }
    (workdir / "plan.json").write_text(json.dumps(plan))
    say(f"{len(runs)} running runs with run tokens, {len(viewers)} viewers (team {team.slug})")
    return plan


# -- the production server ----------------------------------------------------------------------------------
def compose_command(service: str) -> list[str]:
    """A service's command from docker-compose.yml (as tests/test_production_stack.py runs it),
    its program taken from this venv."""
    import yaml

    words = shlex.split(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]["command"])
    program = Path(sys.executable).parent / words[0]
    return [str(program) if program.exists() else words[0], *words[1:]]


def production_env(args: argparse.Namespace, workdir: Path, port: int) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EDGEPLANE_", "PROMETHEUS_"))}
    env = keep | {
        "DJANGO_SETTINGS_MODULE": "controlplane.settings_production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "EDGEPLANE_PLAIN_HTTP": "1",  # local use: plain http (compose's default)
        "EDGEPLANE_VAR_DIR": str(workdir / "var"),
        "EDGEPLANE_WEB_BIND": f"127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
    }
    if args.workers:
        env["EDGEPLANE_WEB_WORKERS"] = str(args.workers)
    if args.threads:
        env["EDGEPLANE_WEB_THREADS"] = str(args.threads)
    return env


def static_root(env: dict[str, str]) -> Path:
    """The Dockerfile's collectstatic (hashed names, gzip twins), kept in the temporary folder
    under a hash of what it reads (our static files, the settings, the versions of the packages
    whose files it collects): a later load test, or the production-stack test, skips its minute."""
    digest = hashlib.sha256()
    for path in sorted(
        [
            *(ROOT / "frontend" / "static").rglob("*"),
            ROOT / "frontend" / "staticfiles.py",
            ROOT / "controlplane" / "settings_production.py",
            ROOT / "controlplane" / "settings.py",
        ]
    ):
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for package in ("django", "djangorestframework", "drf-spectacular-sidecar", "plotly", "whitenoise"):
        digest.update(f"{package}=={importlib.metadata.version(package)}\0".encode())  # their files are collected too
    folder = Path(tempfile.gettempdir()) / f"edgeplane-load-static-{digest.hexdigest()[:16]}"
    if (folder / "staticfiles.json").is_file():
        say(f"static files: {folder} (collected before)")
        return folder
    partial = Path(tempfile.mkdtemp(prefix=f"{folder.name}-partial-"))
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=env | {"EDGEPLANE_STATIC_ROOT": str(partial)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"collectstatic failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    try:
        partial.rename(folder)
    except OSError:  # another load test collected the same files meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    say(f"collectstatic in {time.monotonic() - start:.1f} s: {folder}")
    return folder


def gunicorn_config(env: dict[str, str]) -> dict[str, str]:
    """workers, threads, worker_class, timeout as gunicorn resolves them (--print-config)."""
    done = subprocess.run(
        [*compose_command("web"), "--print-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = dict(
        re.findall(r"^(workers|threads|worker_class|timeout|keepalive)\s*=\s*(\S+)", done.stdout, re.MULTILINE)
    )
    if not found:
        say(f"gunicorn --print-config said nothing usable:\n{done.stdout[-1000:]}{done.stderr[-1000:]}")
    return found


def wait_ready(base: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            for path in ("healthz", "readyz"):
                with urllib.request.urlopen(f"{base}/{path}", timeout=5) as answer:
                    assert answer.status == 200
            return
        except (OSError, AssertionError):
            time.sleep(0.3)
    raise SystemExit(f"{base} not ready within {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen, grace_s: float = 40) -> None:
    """SIGTERM to the process group (gunicorn's graceful stop), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# -- Locust -------------------------------------------------------------------------------------------------
def run_locust(args: argparse.Namespace, workdir: Path, base: str) -> dict[str, Any]:
    users = args.runs + args.viewers
    locust = Path(sys.executable).parent / "locust"
    command = [
        str(locust) if locust.exists() else sys.executable,
        *([] if locust.exists() else ["-m", "locust"]),
        "-f",
        str(ROOT / "bench" / "locustfile.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(args.spawn_rate),
        "--run-time",
        f"{args.run_time}s",
        # at the end each user finishes the request it has in flight: a step's answer is never lost
        "--stop-timeout",
        "300",
        "--host",
        base,
        "--csv",
        str(workdir / "locust"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    env = os.environ | {
        "EDGEPLANE_LOAD_PLAN": str(workdir / "plan.json"),
        "EDGEPLANE_LOAD_OUT": str(workdir / "locust-out.json"),
        "PYTHONPATH": str(ROOT),
    }
    say(
        f"locust: {args.runs} RunEngine + {args.viewers} DashboardViewer users, {args.run_time} s, "
        f"spawn rate {args.spawn_rate}/s"
    )
    log = workdir / "locust.log"
    with log.open("wb") as out:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=args.run_time + 900
        )
    text = log.read_text(errors="replace")
    print(text[-4000:] if args.verbose else "\n".join(text.splitlines()[-25:]))
    if done.returncode != 0 or not (workdir / "locust-out.json").exists():
        raise SystemExit(f"locust failed ({done.returncode}); its log: {log}")
    return json.loads((workdir / "locust-out.json").read_text())


def locust_table(workdir: Path) -> list[dict[str, Any]]:
    """Locust's own stats per request name (its CSV): counts, failures, percentiles (ms), rate."""
    rows = []
    with (workdir / "locust_stats.csv").open() as handle:
        for row in csv.DictReader(handle):
            rows.append(
                {
                    "name": row["Name"],
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "p50_ms": float(row["50%"]),
                    "p95_ms": float(row["95%"]),
                    "p99_ms": float(row["99%"]),
                    "max_ms": float(row["Max Response Time"]),
                    "requests_per_s": float(row["Requests/s"]),
                }
            )
    return rows


# -- the rows check -----------------------------------------------------------------------------------------
def check_rows(plan: dict[str, Any], accepted: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Every run's stored steps are exactly those answered 2xx; each holds exactly its rows."""
    from django.db import connection

    from controlplane.telemetry.models import PromptObservation, SelectionDecision, StepSummary

    ids = [run["id"] for run in plan["runs"]]
    expected = {run_id: sorted(int(s) for s, _ in accepted[str(run_id)]) for run_id in ids}
    per_step = {"observations": plan["prompts"], "decisions": plan["prompts"] * plan["decisions_per_prompt"]}
    stored: dict[int, list[int]] = {run_id: [] for run_id in ids}
    for run_id, step in (
        StepSummary.objects.filter(run_id__in=ids).values_list("run_id", "step").order_by("run_id", "step")
    ):
        stored[run_id].append(step)
    problems: list[str] = []
    for run_id in ids:
        if len(set(expected[run_id])) != len(expected[run_id]):
            problems.append(f"run {run_id}: a step was answered 2xx twice")
        if stored[run_id] != expected[run_id]:
            lost = sorted(set(expected[run_id]) - set(stored[run_id]))
            extra = sorted(set(stored[run_id]) - set(expected[run_id]))
            problems.append(f"run {run_id}: stored steps differ (lost {lost[:10]}, not answered 2xx {extra[:10]})")
    counts = {}
    for kind, model in (("observations", PromptObservation), ("decisions", SelectionDecision)):
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT run_id, step, count(*) FROM {model._meta.db_table} WHERE run_id = ANY(%s) "
                "GROUP BY run_id, step",
                [ids],
            )
            groups = cursor.fetchall()
        counts[kind] = sum(n for _, _, n in groups)
        wrong = [(r, s, n) for r, s, n in groups if n != per_step[kind] or s not in set(expected[r])]
        problems += [f"run {r} step {s}: {n} {kind}, expected {per_step[kind]}" for r, s, n in wrong[:20]]
        total_expected = sum(len(v) for v in expected.values()) * per_step[kind]
        if counts[kind] != total_expected:
            problems.append(f"{counts[kind]} {kind} stored, expected {total_expected} (steps x {per_step[kind]})")
    return {
        "passed": not problems,
        "problems": problems[:50],
        "steps_answered_2xx": sum(map(len, expected.values())),
        "steps_stored": sum(map(len, stored.values())),
        "observation_rows": counts["observations"],
        "decision_rows": counts["decisions"],
        "rows_per_step": per_step,
    }


# -- the figures --------------------------------------------------------------------------------------------
def figures(args: argparse.Namespace, plan: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    rows_per_step = args.prompts * (1 + args.decisions_per_prompt)
    times = sorted(t for steps in out["accepted"].values() for _, t in steps)
    moments = out["moments"]
    start = moments.get("test_start", times[0] if times else 0.0)
    held_from = moments.get("spawning_complete", start)
    held_to = moments.get("test_stopping", times[-1] if times else held_from)
    window = max(held_to - held_from, 1e-9)
    in_window = sum(held_from <= t <= held_to for t in times)
    per_run = [len(steps) for steps in out["accepted"].values()]
    return {
        "steps_total": len(times),
        # steps answered 2xx between every user running and the stop, over that window
        "held_window_s": window,
        "steps_per_s_held": in_window / window,
        "steps_per_s_per_run_held": in_window / window / max(args.runs, 1),
        "rows_per_s_held": in_window * rows_per_step / window,
        "steps_per_run_min": min(per_run) if per_run else 0,
        "steps_per_run_max": max(per_run) if per_run else 0,
        "ingest_latency_ms": percentiles(out["latencies_ms"]["ingest"]),
        "chart_latency_ms": percentiles(out["latencies_ms"]["chart"]),
        "page_latency_ms": percentiles(out["latencies_ms"]["page"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="concurrent runs posting steps (one Locust user each)")
    parser.add_argument("--viewers", type=int, default=20, help="signed-in dashboards polling a run page")
    parser.add_argument("--run-time", type=int, default=180, help="seconds of load (Locust's --run-time)")
    parser.add_argument("--spawn-rate", type=float, default=20.0, help="users started per second")
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run (10 runs, 4 viewers) unless given")
    parser.add_argument("--prompts", type=int, default=1024, help="observations per step")
    parser.add_argument("--decisions-per-prompt", type=int, default=2)
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="the run page's poll interval")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn processes (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, default=0, help="threads per process (default: gunicorn.conf.py's)")
    parser.add_argument("--repeats", type=int, default=1, help="times the whole test runs (an interval)")
    parser.add_argument("--name", default="load_test", help="results file bench/results/<name>.json")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, Locust's CSVs)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="the work folder (plan, logs, Locust's CSVs), kept; default: a temporary one",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.quick:
        given = set(sys.argv)
        args.runs = args.runs if "--runs" in given else 10
        args.viewers = args.viewers if "--viewers" in given else 4
        args.run_time = args.run_time if "--run-time" in given else 30
        args.name = args.name if "--name" in given else "load_test_quick"
    if args.viewers and not args.runs:
        parser.error("viewers need runs to watch")

    from tests.services import services

    env_given = {k: os.environ.get(k, "") for k in ("DATABASE_URL", "CELERY_BROKER_URL")}
    if env_given["DATABASE_URL"] and not env_given["DATABASE_URL"].startswith("postgres"):
        sys.exit("error: DATABASE_URL must be Postgres (or unset: a throwaway one is started, fsync on)")
    with services(durable=True) as exported, tempfile.TemporaryDirectory(prefix="edgeplane-load-") as tmp:
        os.environ.update(exported)
        workdir = Path(tmp)
        if args.workdir:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        elif args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="edgeplane-load-kept-"))
            say(f"work folder kept: {workdir}")
        repeats = []
        for i in range(args.repeats):
            say(f"repeat {i + 1} of {args.repeats}: new runs and viewers, a fresh server, the same database")
            folder = workdir / f"repeat-{i + 1}" if args.repeats > 1 else workdir
            folder.mkdir(parents=True, exist_ok=True)
            repeats.append(run(args, folder, started_postgres="DATABASE_URL" in exported))
    results = summarise(args, repeats)
    from bench._timing import write_results

    say(f"wrote {write_results(args.name, results, args.out)}")
    sys.exit(0 if results["passed"] else 1)


SUMMARISED = (
    ("steps_per_s_held",),
    ("steps_per_s_per_run_held",),
    ("rows_per_s_held",),
    ("ingest_latency_ms", "p50"),
    ("ingest_latency_ms", "p95"),
    ("ingest_latency_ms", "p99"),
    ("chart_latency_ms", "p50"),
    ("chart_latency_ms", "p95"),
    ("chart_latency_ms", "p99"),
)


def summarise(args: argparse.Namespace, repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Every repeat's results, and each headline figure's min, median and max over them."""
    summary: dict[str, Any] = {}
    for path in SUMMARISED:
        values = []
        for repeat in repeats:
            value: Any = repeat["figures"]
            for key in path:
                value = value[key]
            if value is not None:
                values.append(value)
        if values:
            summary["_".join(path)] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    passed = all(r["failures"] == 0 and r["rows_check"]["passed"] and not r["steps_out_of_order"] for r in repeats)
    if len(repeats) > 1:
        say(f"over {len(repeats)} repeats (min / median / max):")
        for name, value in summary.items():
            say(f"  {name:32s} {value['min']:12,.4g} {value['median']:12,.4g} {value['max']:12,.4g}")
    return {
        "what": repeats[0]["what"],
        "passed": passed,
        "repeats_count": len(repeats),
        "failures": sum(r["failures"] for r in repeats),
        "summary_min_median_max": summary,
        "encoding": repeats[0]["encoding"],
        "load": repeats[0]["load"],
        "server": repeats[0]["server"],
        "postgres": repeats[0]["postgres"],
        "repeats": repeats,
    }


def run(args: argparse.Namespace, workdir: Path, *, started_postgres: bool) -> dict[str, Any]:
    load_before = os.getloadavg()  # the machine's load (other work on it) before and after: context for the figures
    from bench._timing import postgres_settings
    from tests.services import free_port

    plan = prepare(args, workdir)
    pg = postgres_settings()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = production_env(args, workdir, port) | {
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
    }
    env["EDGEPLANE_STATIC_ROOT"] = str(static_root(env))
    server = gunicorn_config(env)
    log = workdir / "gunicorn.log"
    with log.open("wb") as out:
        gunicorn = subprocess.Popen(
            compose_command("web"), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(base, gunicorn, log)
        say(f"gunicorn on {base}: {server}")
        out = run_locust(args, workdir, base)
        table = locust_table(workdir)
    finally:
        stop(gunicorn)
    server_errors = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if '"levelname": "ERROR"' in line or '"level": "ERROR"' in line or "Traceback" in line
    ]
    rows = check_rows(plan, out["accepted"])
    figs = figures(args, plan, out)
    failures = sum(row["failures"] for row in table if row["name"] != "Aggregated")
    results = {
        "what": f"{args.runs} runs posting steps over HTTP + {args.viewers} dashboard viewers polling, "
        f"{args.run_time} s, Locust against gunicorn (production settings) on 127.0.0.1",
        "figures": figs,
        "failures": failures,
        "failure_samples": out["failures"][:10],
        "steps_out_of_order": out["bad_order"][:10],
        "server_error_log_lines": len(server_errors),
        "rows_check": rows,
        # Locust's own table (its CSV, refreshed each second while users run: the requests answered
        # while the users stop are in "figures" and the rows check, not here)
        "locust": table,
        "encoding": out["encoding"],
        "load": {
            "runs": args.runs,
            "viewers": args.viewers,
            "run_time_s": args.run_time,
            "spawn_rate_per_s": args.spawn_rate,
            "poll_seconds": args.poll_seconds,
            "observations_per_step": args.prompts,
            "decisions_per_step": args.prompts * args.decisions_per_prompt,
        },
        "server": {
            "command": " ".join(compose_command("web")[-3:]),
            "settings": "controlplane.settings_production",
            **server,
        },
        "machine_load_average_1_5_15_min": {"before": list(load_before), "after": list(os.getloadavg())},
        "postgres": {
            "EDGEPLANE_PG_SETTINGS": os.environ.get("EDGEPLANE_PG_SETTINGS", ""),
            "started_by_this_run": started_postgres,
            "shown": pg,
        },
    }
    ingest, chart = figs["ingest_latency_ms"], figs["chart_latency_ms"]
    say(f"encoding: {out['encoding']}")
    say(f"server: gunicorn {server}; postgres {pg}")
    say(f"steps answered 2xx: {figs['steps_total']} ({figs['steps_per_run_min']}..{figs['steps_per_run_max']} a run)")
    say(
        f"held over {figs['held_window_s']:.1f} s (all users running until the stop): "
        f"{figs['steps_per_s_held']:.2f} steps/s in all, {figs['steps_per_s_per_run_held']:.3f} steps/s a run, "
        f"{figs['rows_per_s_held']:,.0f} rows/s"
    )
    for label, lat in (("ingest", ingest), ("charts", chart)):
        if lat["n"]:
            say(
                f"{label} latency (ms, n={lat['n']}): p50 {lat['p50']:.0f}  p95 {lat['p95']:.0f}  "
                f"p99 {lat['p99']:.0f}  max {lat['max']:.0f}"
            )
    say(f"failures: {failures}; server error log lines: {len(server_errors)}")
    say(
        f"rows check: {'passed' if rows['passed'] else 'FAILED'} ({rows['steps_stored']} steps stored, "
        f"{rows['observation_rows']:,} observations, {rows['decision_rows']:,} decisions)"
    )
    for problem in rows["problems"][:10]:
        say(f"  {problem}")
    return results


if __name__ == "__main__":
    main()
