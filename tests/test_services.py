"""tests/services.py: throwaway PostgreSQL and Redis that are always stopped and removed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests import services

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "tests" / "services.py"


def _require_binaries() -> None:
    try:
        services.find_pg_bindir()
        found = shutil.which("redis-server") is not None
    except services.ServiceError:
        found = False
    if not found:
        message = "needs the postgresql and redis-server packages (scripts/apt-deps.sh)"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _environ_without_services() -> dict[str, str]:
    drop = {"DATABASE_URL", "CELERY_BROKER_URL", "EDGEPLANE_TEST_REDIS_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _pids(stderr: str) -> list[int]:
    pids = [int(p) for p in re.findall(r"\(pid (\d+)", stderr)]
    assert len(pids) == 2, stderr
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _leftover_dirs(wrapper_pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"{services.DIR_PREFIX}{wrapper_pid}-*"))


CHILD = """
import os, sys, psycopg, redis
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    row = conn.execute("SELECT rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user")
    assert row.fetchone() == (True, False)
assert redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).ping()
assert redis.Redis.from_url(os.environ["EDGEPLANE_TEST_REDIS_URL"]).ping()
print("child ok", flush=True)
sys.exit(7)
"""


def test_the_command_sees_both_services_and_its_exit_status_passes_through() -> None:
    _require_binaries()
    proc = subprocess.Popen(
        [sys.executable, str(SERVICES), "--", sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=_environ_without_services(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert "child ok" in stdout, stderr
    assert proc.returncode == 7
    assert all(_gone(pid) for pid in _pids(stderr))
    assert "stopped Postgres and Redis" in stderr
    assert _leftover_dirs(proc.pid) == []


def test_sigterm_stops_the_command_and_then_both_services() -> None:
    _require_binaries()
    proc = subprocess.Popen(
        [sys.executable, str(SERVICES), "--", sys.executable, "-c",
         "import time; print('running', flush=True); time.sleep(60)"],
        cwd=ROOT,
        env=_environ_without_services(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "running"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - started < 30
    assert all(_gone(pid) for pid in _pids(stderr))
    assert _leftover_dirs(proc.pid) == []


def test_nothing_is_started_when_the_environment_names_both_services() -> None:
    env = _environ_without_services() | {
        "DATABASE_URL": "postgres://u:p@db.invalid/x",
        "CELERY_BROKER_URL": "redis://redis.invalid:6379/0",
    }
    result = subprocess.run(
        [sys.executable, str(SERVICES), "--", sys.executable, "-c",
         "import os; print(os.environ['DATABASE_URL'])"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgres://u:p@db.invalid/x"
    assert "pid" not in result.stderr
