"""Readiness checks (GET /readyz) and the workers' summary (?workers=1).

Every check runs in a small shared thread pool and is waited for at most
EDGEPLANE_HEALTH_TIMEOUT_SECONDS (default 3): a database or broker that does not answer is a
failed check after that long, never a hung request. A check stuck past its time keeps its thread
until the socket gives up; the pool is small, so stuck checks cannot pile up threads (a check that
finds no free thread fails as timed out too).

Answers name what failed and why, never a URL or a password: errors are reduced to their type
and message with any credential of the broker or database URL blanked.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=6, thread_name_prefix="edgeplane-health")


@dataclass
class CheckResult:
    name: str
    ok: bool
    ms: float
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "ms": round(self.ms, 1)}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


def timeout_seconds() -> float:
    return float(getattr(settings, "EDGEPLANE_HEALTH_TIMEOUT_SECONDS", 3))


def _secrets() -> list[str]:
    """Credentials that must never reach an answer: the database's and the broker's passwords."""
    found = [str(db.get("PASSWORD") or "") for db in settings.DATABASES.values()]
    from kombu.utils.url import url_to_parts

    with contextlib.suppress(Exception):  # a URL kombu cannot read has no password to hide
        found.append(url_to_parts(settings.CELERY_BROKER_URL).password or "")
    return [s for s in found if s]


def describe_error(exc: BaseException) -> str:
    """``Type: message``, one line, credentials blanked, bounded length."""
    text = " ".join(str(exc).split()) or "no message"
    for secret in _secrets():
        text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text}"[:300]


def run_bounded(name: str, check: Callable[[], dict[str, Any] | None], timeout: float) -> CheckResult:
    """Run ``check`` in the pool, wait at most ``timeout``; a raised error or the timeout is a failure."""
    started = time.monotonic()
    try:
        future = _POOL.submit(check)
    except RuntimeError as exc:  # the interpreter is shutting down
        return CheckResult(name, False, 0.0, describe_error(exc))
    try:
        extra = future.result(timeout=timeout) or {}
    except concurrent.futures.TimeoutError:
        future.cancel()  # not started yet: it never will be
        return CheckResult(name, False, (time.monotonic() - started) * 1000,
                           f"no answer within {timeout:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure of a check is the answer, never a 500
        return CheckResult(name, False, (time.monotonic() - started) * 1000, describe_error(exc))
    return CheckResult(name, True, (time.monotonic() - started) * 1000, extra=extra)


# -- the checks -----------------------------------------------------------------------------------------
def _in_own_connection(work: Callable[[Any], dict[str, Any] | None]) -> Callable[[], dict[str, Any] | None]:
    """Run ``work(connection)`` on this pool thread's own connection, closed afterwards: a check
    leaves no connection behind, and a broken one is never reused by the next check."""

    def run() -> dict[str, Any] | None:
        connection = connections["default"]
        try:
            return work(connection)
        finally:
            connection.close()

    return run


def check_database() -> dict[str, Any] | None:
    def work(connection: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            if cursor.fetchone()[0] != 1:
                raise RuntimeError("SELECT 1 did not answer 1")

    return _in_own_connection(work)()


def check_migrations() -> dict[str, Any] | None:
    """Every migration of the code is applied (an empty plan): a web started before `migrate`
    finished, or on a database of an older release, is not ready."""

    def work(connection: Any) -> dict[str, Any] | None:
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            names = [f"{m.app_label}.{m.name}" for m, backwards in plan if not backwards]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise RuntimeError(f"{len(plan)} migration(s) not applied ({shown}); run `python manage.py migrate`")
        return None

    return _in_own_connection(work)()


def broker_connection(timeout: float) -> Any:
    """A kombu connection to the configured broker that gives up within ``timeout``."""
    from controlplane.celery import app

    options = dict(app.conf.broker_transport_options or {})
    if app.conf.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    url = app.conf.broker_url
    if url == "filesystem://":
        url = "filesystem://localhost/"  # the same broker; kombu warns of a missing hostname otherwise
    return app.connection_for_write(url, connect_timeout=timeout, transport_options=options)


def check_broker() -> dict[str, Any] | None:
    from controlplane.celery import app

    timeout = timeout_seconds()
    transport = app.conf.broker_url.split("://", 1)[0] or "?"
    with broker_connection(timeout) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        if transport == "filesystem":
            # kombu's filesystem transport "connects" to anything: the folders must be there and writable.
            options = app.conf.broker_transport_options or {}
            for key in ("data_folder_in", "data_folder_out", "control_folder"):
                folder = options.get(key)
                if folder and not (Path(folder).is_dir() and _writable(Path(folder))):
                    raise RuntimeError(f"the filesystem broker's {key} is missing or not writable")
        else:
            conn.default_channel  # noqa: B018 - opening a channel talks to the server (Redis: PING-like)
            if hasattr(conn.default_channel, "client"):
                conn.default_channel.client.ping()
    return {"transport": transport}


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


READINESS_CHECKS: dict[str, Callable[[], dict[str, Any] | None]] = {
    "database": check_database,
    "migrations": check_migrations,
    "broker": check_broker,
}


def readiness() -> tuple[bool, dict[str, CheckResult]]:
    """Run the checks concurrently, each bounded; ready when all pass."""
    timeout = timeout_seconds()
    deadline = time.monotonic() + timeout
    futures: dict[str, concurrent.futures.Future[CheckResult]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(READINESS_CHECKS)) as waiters:
        # Each waiter only waits on its check in the shared pool, so they return within the timeout.
        for name, check in READINESS_CHECKS.items():
            futures[name] = waiters.submit(run_bounded, name, check, timeout)
    results = {name: f.result(timeout=max(deadline - time.monotonic(), 0) + 1) for name, f in futures.items()}
    return all(r.ok for r in results.values()), results


# -- workers (informational) -----------------------------------------------------------------------------
def workers_summary(timeout: float | None = None) -> dict[str, Any]:
    """Who consumes what now: every worker that answers Celery's remote control within the
    timeout, with the queues it consumes and the tasks it is executing (names, no arguments).
    Never decides the web's readiness."""
    from controlplane.celery import app

    timeout = min(timeout_seconds(), 2.0) if timeout is None else timeout
    with broker_connection(timeout) as conn:
        inspect = app.control.inspect(timeout=timeout / 2, connection=conn)
        queues = inspect.active_queues() or {}
        active = inspect.active() or {}
    workers = []
    for name in sorted(set(queues) | set(active)):
        tasks = active.get(name) or []
        workers.append({
            "name": name,
            "queues": sorted(q.get("name", "?") for q in queues.get(name) or []),
            "active": len(tasks),
            "active_tasks": sorted(t.get("name") or "?" for t in tasks),
        })
    return {"count": len(workers), "workers": workers}
