"""The worker's log lines of each run (controlplane/operations/run_logs.py): kept by run from the log
context, written in batches (one INSERT per flush, a flush at least every second), capped per run with
the dropped lines counted, and a database outage costs the run nothing (the lines wait, then arrive).
Against the real database; the outage is a real one (the connection's server moved away)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.operations.logs import log_context
from controlplane.operations.models import RunLogLine
from controlplane.operations.run_logs import RunLogHandler
from controlplane.operations.selectors import run_log_page
from controlplane.runs.models import Run

pytestmark = pytest.mark.django_db
# The handler's own thread writes with its own connection, and an outage closes the test's: these see
# committed rows only, outside the test's transaction.
committed = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runs(fast_passwords, acme):
    from controlplane.datasets.services import dataset_import_builtin

    dataset = dataset_import_builtin(team=acme, task="add", n_train=4, n_test=0, name="tiny")
    return [Run.objects.create(team=acme, dataset=dataset, name=f"run {i}", config={}) for i in (1, 2)]


@pytest.fixture
def logger():
    """A logger of its own at DEBUG, its records reaching only the handler under test."""
    log = logging.getLogger("tests.run_logs")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.handlers.clear()


def attach(log: logging.Logger, **kwargs) -> RunLogHandler:
    handler = RunLogHandler(thread=False, **kwargs)
    log.addHandler(handler)
    return handler


def lines(run) -> list[RunLogLine]:
    return list(RunLogLine.objects.filter(run=run).order_by("id"))


def test_lines_are_kept_by_the_run_of_their_context_whatever_thread_logs_them(runs, logger):
    a, b = runs
    handler = attach(logger)
    logger.info("before any run")
    with log_context(run_id=a.id, attempt=2):
        logger.info("step %d of run a", 1)
        worker = threading.Thread(target=contextvars.copy_context().run, args=(logger.warning, "from a thread"))
        worker.start()
        worker.join()
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    with log_context(run_id=b.id):  # not claimed yet: no attempt
        logger.debug("queued")
    logger.info("after", extra={"run_id": b.id})  # a caller's own run_id counts too
    with log_context(run_id=b.id + 1000):
        logger.info("a launch message for no run")  # dropped: it would fail every batch it is in
    assert handler.flush() is True and handler.pending() == 0
    got = lines(a)
    assert [(r.message.splitlines()[0], r.level, r.attempt, r.logger) for r in got] == [
        ("step 1 of run a", logging.INFO, 2, "tests.run_logs"), ("from a thread", logging.WARNING, 2, "tests.run_logs"),
        ("it failed", logging.ERROR, 2, "tests.run_logs")]
    assert "ValueError: boom" in got[2].message and "Traceback" in got[2].message
    assert [r.seq for r in got] == [1, 2, 3]
    assert [(r.message, r.attempt) for r in lines(b)] == [("queued", None), ("after", None)]
    assert RunLogLine.objects.count() == 5  # "before any run" belongs to none


def test_a_flush_writes_every_run_in_one_insert(runs, logger):
    a, b = runs
    handler = attach(logger)
    for i in range(300):
        with log_context(run_id=(a if i % 2 else b).id, attempt=1):
            logger.info("line %d", i)
    with CaptureQueriesContext(connection) as queries:
        handler.flush()
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].upper().startswith("INSERT")]
    assert len(inserts) == 1, inserts
    assert len(lines(a)) == len(lines(b)) == 150
    # the next flush continues each run's numbers from the database (another process, or a later attempt)
    other = attach(logger)
    with log_context(run_id=a.id, attempt=2):
        logger.info("next attempt")
    other.flush()
    assert lines(a)[-1].seq == 151


@committed
def test_the_thread_flushes_within_a_second_without_being_asked(runs, logger):
    a, _ = runs
    handler = RunLogHandler(interval=1.0)
    logger.addHandler(handler)
    with log_context(run_id=a.id, attempt=1):
        logger.info("live line")
    logged = time.monotonic()
    try:
        while not RunLogLine.objects.filter(run=a).exists():
            assert time.monotonic() - logged < 2.5, "the line was not written within a second (and a margin)"
            time.sleep(0.05)
    finally:
        handler.close()  # ends the thread and its connection


def test_a_run_keeps_its_newest_lines_and_counts_the_dropped_ones(runs, logger):
    a, b = runs
    handler = attach(logger, cap=50)
    for batch in range(3):
        for i in range(40):
            with log_context(run_id=a.id):
                logger.info("line %d", batch * 40 + i)
        with log_context(run_id=b.id):
            logger.info("b's only line")
        handler.flush()
    kept = lines(a)
    assert len(kept) == 50
    assert [r.message for r in kept] == [f"line {i}" for i in range(70, 120)]
    page = run_log_page(a)
    assert (page.kept, page.dropped) == (50, 70)
    assert run_log_page(b).dropped == 0 and run_log_page(b).kept == 3


@contextlib.contextmanager
def database_away():
    """A real outage for every new connection: the server's address points where nothing listens
    (a closed port; for SQLite, a file that cannot be opened)."""
    settings = connection.settings_dict
    saved = dict(settings)
    connection.close()
    if connection.vendor == "sqlite":
        settings["NAME"] = "/nonexistent/edgeplane/db.sqlite3"
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # free, and nothing listens once closed
        settings.update(HOST="127.0.0.1", PORT=str(port))
    try:
        yield
    finally:
        connection.close()
        settings.clear()
        settings.update(saved)


@committed
def test_the_run_goes_on_while_the_database_is_away_and_its_lines_arrive_after(runs, logger):
    a, _ = runs
    handler = attach(logger, pending_max=30)
    with log_context(run_id=a.id, attempt=1):
        logger.info("before the outage")
    assert handler.flush() is True
    with database_away():
        with log_context(run_id=a.id, attempt=1):
            for i in range(20):
                logger.info("during %d", i)  # never raises
        assert handler.flush() is False and handler.flush() is False  # retried, never raised
        assert handler.pending() == 20 and handler.failures == 2
        with log_context(run_id=a.id, attempt=1):
            for i in range(20, 35):
                logger.info("during %d", i)  # beyond pending_max: the oldest waiting lines go
        assert handler.pending() == 30
    assert handler.flush() is True and handler.failures == 0
    kept = lines(a)
    assert [r.message for r in kept] == ["before the outage", *[f"during {i}" for i in range(5, 35)]]
    assert run_log_page(a).dropped == 5  # the 5 lines lost while it was away: counted, shown on the page
    assert kept[1].seq == 7  # the numbers skip them
