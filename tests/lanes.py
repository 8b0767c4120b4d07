"""Run the whole suite as two pytest processes at once: the verl lane and the rest.

    python tests/lanes.py [PYTEST_OPTION ...]

The verl lane (the tests that drive verl's own training loop on CPU, and the verl run paths of the
control plane) spends most of its wall time waiting on Ray and on the training jobs it starts, not
computing: in one measured run its tests took 137 s of wall time for 44 s of CPU. Run one after
the other with the rest, those waits made the suite about 11 minutes longer on 2 cores. Running
the two lanes side by side hides the waits behind the rest of the suite.

The lanes must not meet, so the verl lane gets its own databases from the same servers that
tests/services.py started: its Postgres test database is ``test_<name>_verl`` (pytest-django
derives it from the database name), its Celery broker is Redis database 2 and its flushable test
database is Redis database 3 (the main lane keeps 0 and 1). Every Ray-using test lives in that
lane, so at most one lane starts Ray clusters.

The main lane prints as it goes; the verl lane's output is kept and printed whole when it ends, so
the two never interleave. Each lane's exit status and duration is printed at the end; the exit
status is the main lane's if it failed, else the verl lane's (pytest's 5, nothing collected, is a
failure in either). Ctrl-C or SIGTERM stops both lanes.

Extra options (e.g. ``-x`` or ``--durations=40``) go to both lanes. To run chosen tests, call
pytest directly (``make test PYTEST_ARGS=...`` does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

# Tests that start verl's trainer or Ray, relative to the repository root.
VERL_LANE = (
    "tests/engines/verl",
    "tests/controlplane/test_verl_cpu_runs.py",
    "tests/controlplane/test_verl_runs.py",
    "tests/controlplane/test_verl_runs_ray.py",
)
VERL_REDIS_BROKER_DB = 2
VERL_REDIS_TEST_DB = 3


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def verl_lane_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of the verl lane: the same servers, other databases."""
    out = dict(env)
    if env.get("DATABASE_URL", "").startswith("postgres"):
        name = urlsplit(env["DATABASE_URL"]).path.lstrip("/") or "edgeplane"
        out["DATABASE_URL"] = with_path(env["DATABASE_URL"], f"/{name}_verl")
    if env.get("CELERY_BROKER_URL", "").startswith("redis"):
        out["CELERY_BROKER_URL"] = with_path(env["CELERY_BROKER_URL"], f"/{VERL_REDIS_BROKER_DB}")
    if env.get("EDGEPLANE_TEST_REDIS_URL", "").startswith("redis"):
        out["EDGEPLANE_TEST_REDIS_URL"] = with_path(env["EDGEPLANE_TEST_REDIS_URL"], f"/{VERL_REDIS_TEST_DB}")
    return out


def commands(extra: list[str]) -> tuple[list[str], list[str]]:
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra]
    main = [*pytest, *(f"--ignore={path}" for path in VERL_LANE)]
    return main, [*pytest, *VERL_LANE]


def main(argv: list[str]) -> int:
    main_cmd, verl_cmd = commands(argv)
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as verl_log:
        # Own process groups, so a stop reaches every process a lane started (workers, jobs).
        verl = subprocess.Popen(verl_cmd, cwd=ROOT, env=verl_lane_env(dict(os.environ)), stdout=verl_log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        main_lane = subprocess.Popen(main_cmd, cwd=ROOT, start_new_session=True)
        lanes = (main_lane, verl)

        def stop(signum: int, _frame: object) -> None:
            for lane in lanes:
                if lane.poll() is None:
                    os.killpg(lane.pid, signal.SIGTERM)
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        main_rc = main_lane.wait()
        main_s = time.monotonic() - started
        verl_rc = verl.wait()
        verl_s = time.monotonic() - started
        verl_log.seek(0)
        print(f"\n{'=' * 30} verl lane ({' '.join(VERL_LANE)}) {'=' * 30}", flush=True)
        sys.stdout.write(verl_log.read())
    print(f"\nlanes: main exited {main_rc} after {main_s:.0f} s; verl exited {verl_rc} after {verl_s:.0f} s",
          flush=True)
    return main_rc if main_rc != 0 else verl_rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
