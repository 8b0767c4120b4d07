"""The worker's log lines of each run, kept in the database for the run page's logs panel.

A Celery worker installs one ``RunLogHandler`` on the root logger when a run's task starts
(``celery_task_prerun``) and flushes it when the task ends (``celery_task_postrun``). The handler keeps
every record logged while the run's context is set (``logs.log_context``: run_id, attempt; the same
fields the JSON lines on stderr carry), whatever thread logged it, and writes them in batches:

- one INSERT per run and flush, at least every ``interval`` seconds (a thread of its own) and at task end;
- at most ``cap`` lines a run (the newest; older ones are deleted as new ones come); the lines dropped
  leave gaps in ``seq``, which the page counts and reports;
- never an error into the run: while the database is away the lines wait in memory (at most
  ``pending_max``; beyond that the oldest are dropped and counted) and the next flush retries.

What is kept is what the worker logs: records below the root logger's level (EDGEPLANE_LOG_LEVEL, or the
worker's ``--loglevel`` when lower) never reach any handler. A verl job's own lines are its job's (Ray's
log); what the verl worker logs while it submits and watches the job is kept here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

from controlplane.operations.logs import RUN_TASKS, log_context_get

RUN_LOG_CAP = 20_000  # lines kept per run (the newest); the page says when older ones were dropped
FLUSH_SECONDS = 1.0
PENDING_MAX = 50_000  # lines held in memory while the database is away
MESSAGE_MAX = 16_000  # characters of one line (a traceback included) kept
LOGGER_MAX = 200

log = logging.getLogger(__name__)
_PLAIN = logging.Formatter()

# (run_id, attempt, created, levelno, logger, message): a record reduced to what is stored, taken at emit
# time (the record's args may change after the call returns).
Line = tuple[int, int | None, float, int, str, str]


def run_log_lines_add(*, lines: list[Line], next_seq: dict[int, int], cap: int = RUN_LOG_CAP,
                      skipped: dict[int, int] | None = None) -> None:
    """Store ``lines`` (in the order logged) with one INSERT for all runs, then delete each run's lines
    older than its newest ``cap``. ``next_seq`` holds each run's next number (read from the database for
    a run not seen yet) and is advanced only when the write committed; ``skipped`` counts lines a run
    lost before they could be written (the numbers skip them, so the page counts them as dropped)."""
    from django.db import transaction
    from django.db.models import Max

    from controlplane.operations.models import RunLogLine
    from controlplane.runs.models import Run

    skipped = skipped or {}
    # A run that is not there (deleted meanwhile; a launch message for no run) keeps nothing: its lines would
    # fail the whole batch, again at every retry.
    runs = set(Run.objects.filter(pk__in={line[0] for line in lines}).values_list("pk", flat=True))
    lines = [line for line in lines if line[0] in runs]
    seq = dict(next_seq)
    for run_id in runs - seq.keys():
        newest = RunLogLine.objects.filter(run_id=run_id).aggregate(top=Max("seq"))["top"]
        seq[run_id] = (newest or 0) + 1
    rows = []
    for run_id, attempt, created, levelno, logger, message in lines:
        if skipped.get(run_id):
            seq[run_id] += skipped[run_id]
            skipped = {**skipped, run_id: 0}
        rows.append(RunLogLine(run_id=run_id, attempt=attempt, seq=seq[run_id], level=levelno,
                               at=dt.datetime.fromtimestamp(created, tz=dt.UTC), logger=logger[:LOGGER_MAX],
                               message=message[:MESSAGE_MAX]))
        seq[run_id] += 1
    with transaction.atomic():
        RunLogLine.objects.bulk_create(rows)
        for run_id in runs:
            if seq[run_id] - 1 > cap:  # keep seq in (newest - cap, newest]: one range delete on (run, seq)
                RunLogLine.objects.filter(run_id=run_id, seq__lte=seq[run_id] - 1 - cap).delete()
    next_seq.update(seq)


class RunLogHandler(logging.Handler):
    """Keeps the records logged inside a run's context and writes them in batches (see the module)."""

    def __init__(self, *, cap: int = RUN_LOG_CAP, interval: float = FLUSH_SECONDS, pending_max: int = PENDING_MAX,
                 thread: bool = True) -> None:
        super().__init__(level=logging.NOTSET)
        self.cap, self.interval, self.pending_max, self.thread = cap, interval, pending_max, thread
        self._pending: deque[Line] = deque()
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time: the thread, or a task's end
        self._next_seq: dict[int, int] = {}
        self._lost: dict[int, int] = defaultdict(int)  # lines dropped before writing, by run
        self._local = threading.local()  # set while this thread writes: its own records are not kept
        self._wake = threading.Event()
        self._pid: int | None = None
        self._flusher: threading.Thread | None = None
        self._stopping = False
        self.failures = 0  # flushes that failed in a row (the database away): tests and the warning read it

    # -- capture ------------------------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "writing", False):
            return  # the database layer's own records while we write (and a loop through them)
        context = log_context_get()
        run_id = getattr(record, "run_id", None) or context.get("run_id")
        if run_id is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{(self.formatter or _PLAIN).formatException(record.exc_info)}"
            elif record.exc_text:
                message = f"{message}\n{record.exc_text}"
            attempt = getattr(record, "attempt", None) or context.get("attempt")
            line = (int(run_id), int(attempt) if attempt is not None else None, record.created, record.levelno,
                    record.name, message)
        except Exception:  # noqa: BLE001 - a record that cannot be read (a bad format string): logging reports it
            self.handleError(record)
            return
        with self._pending_lock:
            self._pending.append(line)
            while len(self._pending) > self.pending_max:
                self._lost[self._pending.popleft()[0]] += 1
        if self.thread:
            self._ensure_flusher()

    # -- writing ------------------------------------------------------------------------------------------

    def _ensure_flusher(self) -> None:
        # After a fork (prefork pool) the parent's thread is not ours: start one in this process.
        if self._flusher is not None and self._pid == os.getpid() and self._flusher.is_alive():
            return
        with self._pending_lock:
            if self._flusher is not None and self._pid == os.getpid() and self._flusher.is_alive():
                return
            self._pid = os.getpid()
            self._flusher = threading.Thread(target=self._loop, name="edgeplane-run-logs", daemon=True)
            self._flusher.start()

    def _loop(self) -> None:
        from django.db import connections

        try:
            while not self._stopping:
                self._wake.wait(self.interval)
                self._wake.clear()
                self.flush()
        finally:
            connections.close_all()  # this thread's own connections

    def flush(self) -> bool:
        """Write what is pending; True when nothing is left pending. Never raises: on a database error the
        lines go back in front of any newer ones and the next flush retries."""
        with self._flush_lock:
            with self._pending_lock:
                lines = list(self._pending)
                self._pending.clear()
                lost = dict(self._lost)
                self._lost.clear()
            if not lines:
                with self._pending_lock:
                    for run_id, n in lost.items():
                        self._lost[run_id] += n  # counted with the run's next written line
                return True
            self._local.writing = True
            try:
                run_log_lines_add(lines=lines, next_seq=self._next_seq, cap=self.cap, skipped=lost)
            except Exception as exc:  # noqa: BLE001 - whatever the database says, the run goes on
                self.failures += 1
                self._forget_connection()
                with self._pending_lock:
                    self._pending.extendleft(reversed(lines))
                    for run_id, n in lost.items():
                        self._lost[run_id] += n
                    while len(self._pending) > self.pending_max:
                        self._lost[self._pending.popleft()[0]] += 1
                if self.failures in (1, 10) or self.failures % 60 == 0:  # not a line a second while it lasts
                    with self._quiet():
                        log.warning("run logs: %d lines wait for the database (%s: %s); retrying every %.0f s",
                                    len(self._pending), type(exc).__name__, exc, self.interval)
                return False
            finally:
                self._local.writing = False
            self.failures = 0
            return True

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        self._local.writing = True
        try:
            yield
        finally:
            self._local.writing = False

    def _forget_connection(self) -> None:
        """Drop this thread's database connection after an error, so the next flush opens a fresh one
        (a connection the server closed stays unusable otherwise)."""
        from django.db import connection

        try:
            connection.close()
        except Exception:  # noqa: BLE001, S110 - already broken: the next flush connects anew
            pass

    def pending(self) -> int:
        with self._pending_lock:
            return len(self._pending)

    def close(self) -> None:
        """Write what is pending and end the thread (logging calls this at exit)."""
        self._stopping = True
        self._wake.set()
        if self._flusher is not None and self._pid == os.getpid() and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        self.flush()
        super().close()


_handler: RunLogHandler | None = None


def handler_install() -> RunLogHandler:
    """The process's handler, on the root logger (again, if a logging reconfiguration removed it)."""
    global _handler
    if _handler is None:
        _handler = RunLogHandler()
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    return _handler


def _run_task(task: Any, args: Any, kwargs: Any) -> bool:
    return getattr(task, "name", None) in RUN_TASKS or (kwargs or {}).get("run_id") is not None


def celery_task_prerun(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    """Keep the lines of a run's task from its start."""
    if _run_task(task, args, kwargs):
        handler_install()


def celery_task_postrun(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    """The task's last lines are in the database when it ends (the page's last poll shows them)."""
    if _handler is not None and _run_task(task, args, kwargs):
        _handler.flush()
