"""Structured logs: one JSON object a line (EDGEPLANE_LOG_FORMAT=json, the default) or a plain
line (EDGEPLANE_LOG_FORMAT=plain), with the run's context on every line logged while a run's
task executes.

Fields of a JSON line: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``;
then, where they apply, ``run_id`` and ``attempt`` (set by ``log_context`` in the launch and claim
path, controlplane/runs), ``task_id`` and ``task_name`` (the Celery task being executed),
``exc_info`` (a traceback), and any ``extra=`` a caller passed. docs/operations.md lists them.

The context lives in a ContextVar, so it follows the task's thread (and threads started with
``contextvars.copy_context().run``), and never leaks from one task to the next: ``log_context``
restores what was there before on exit.

settings.py builds its LOGGING from ``logging_config`` before apps load: nothing here needs them.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

FORMATS = ("json", "plain")
DEFAULT_FORMAT = "json"  # production-safe: compose, the demo and a terminal all get JSON lines

# The fields the run's context adds to every record (ContextFilter); names are stable (log queries use them).
CONTEXT_FIELDS = ("run_id", "attempt")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("edgeplane_log_context",
                                                                                 default=None)


def log_context_get() -> dict[str, Any]:
    """The fields every line logged now carries (a copy)."""
    return dict(_context.get() or {})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (run_id, attempt) to every record logged inside the block, in this thread and
    the threads it starts with the context copied; what was set before comes back on exit.
    A field given as None is removed for the block."""
    merged = {**(_context.get() or {}), **fields}
    token = _context.set({k: v for k, v in merged.items() if v is not None})
    try:
        yield
    finally:
        _context.reset(token)


def _current_task() -> Any:
    try:
        from celery._state import get_current_task
    except ImportError:  # pragma: no cover - celery is a dependency; the web works without it too
        return None
    return get_current_task()


class ContextFilter(logging.Filter):
    """Adds the run's context (run_id, attempt) and the executing Celery task (task_id, task_name)
    to every record that passes the handler. A field the caller set with ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        task = _current_task()
        request = getattr(task, "request", None) if task is not None else None
        task_id = getattr(request, "id", None)
        if task_id and not hasattr(record, "task_id"):
            record.task_id = task_id
            record.task_name = getattr(task, "name", None)
        return True


class JsonFormatter(_JsonFormatter):
    """python-json-logger's formatter with this project's field names: time, level, logger, message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", *args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # UTC whatever the machine's zone, so lines from web, worker and beat sort together.
        return dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds")


class PlainFormatter(logging.Formatter):
    """The readable line (make demo, a terminal): time, level, logger, message, then the run's context."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [f"{key}={getattr(record, key)}" for key in (*CONTEXT_FIELDS, "task_id")
                if getattr(record, key, None) is not None]
        if not tags:
            return line
        head, sep, rest = line.partition("\n")  # the context goes on the first line, before any traceback
        return f"{head} [{' '.join(tags)}]{sep}{rest}"


def log_format(value: str | None) -> str:
    """EDGEPLANE_LOG_FORMAT's value, checked: json (default, also when empty) or plain."""
    fmt = (value or DEFAULT_FORMAT).strip().lower()
    if fmt not in FORMATS:
        raise ImproperlyConfigured(f"EDGEPLANE_LOG_FORMAT={fmt!r} is not a log format; use one of {', '.join(FORMATS)}")
    return fmt


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """Django's LOGGING: every record to stderr through one handler that adds the run's context."""
    formatter = {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"()": f"{__name__}.PlainFormatter"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"}},
        "formatters": {"edgeplane": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "edgeplane", "filters": ["context"]}},
        "root": {"handlers": ["stderr"], "level": level},
        # Django's own handlers (its debug-only console, runserver's request lines) are dropped: its
        # records go through the same handler, in the same format, at the root's level (runserver's
        # request lines at INFO).
        "loggers": {"django": {"handlers": [], "propagate": True, "level": "NOTSET"},
                    "django.server": {"handlers": [], "propagate": True, "level": "INFO"}},
    }


# Tasks whose first argument is a run id: Celery's own lines about them while they execute (succeeded, failed
# with a traceback) carry the run too, from task_prerun to task_postrun.
RUN_TASKS = frozenset({"edgeplane.launch_run", "edgeplane.launch_verl_run"})
_task_tokens: dict[str, contextvars.Token] = {}


def celery_task_prerun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None,
                       **_: Any) -> None:
    run_id = (kwargs or {}).get("run_id")
    if run_id is None and getattr(task, "name", None) in RUN_TASKS and args:
        run_id = args[0]
    if run_id is not None and task_id:
        _task_tokens[task_id] = _context.set({**(_context.get() or {}), "run_id": run_id})


def celery_task_postrun(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        with contextlib.suppress(ValueError):  # set in another context: nothing of ours to undo here
            _context.reset(token)


def celery_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Receiver of Celery's ``setup_logging`` signal: with a receiver, Celery leaves the root
    logger to us instead of replacing its handlers with its own plain format, so the worker's
    lines (celery.*), the tasks' and the engine's (workers.engines.*) all go through LOGGING's
    JSON handler. The worker's ``--loglevel`` applies when it asks for more than
    EDGEPLANE_LOG_LEVEL."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)
    root = logging.getLogger()
    try:  # the prefork pool's own logger (billiard) does not propagate: give it the same handlers
        from billiard.util import get_logger as pool_logger

        pool = pool_logger()
        pool.handlers = list(root.handlers)
        pool.setLevel(logging.ERROR)  # as Celery sets it: its INFO lines are the pool's bookkeeping
    except ImportError:  # pragma: no cover - billiard comes with Celery
        pass
    if loglevel:
        wanted = logging.getLevelName(loglevel) if isinstance(loglevel, str) else int(loglevel)
        if isinstance(wanted, int) and wanted < root.level:
            root.setLevel(wanted)
