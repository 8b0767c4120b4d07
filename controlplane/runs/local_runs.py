"""Local runs: trained in the worker that claims them, by the embedded engine
(``workers.engines.local``). The twin of ``verl_runs``.

**Launch and execute** (task ``edgeplane.launch_run``): claim the run atomically, record the
attempt, export its dataset to the run folder and train it in this process; the engine reports
each step to the control plane (``ControlPlaneSink``) and, for debugging, to a JSON-lines copy in
the run folder. A verl run that reaches this task is handed to its own queue, never trained here.

**Reconcile** (task ``edgeplane.reconcile_runs``, beat): a local run whose heartbeat went stale
lost its worker: it is marked lost and requeued to resume from its last checkpoint (or
cancelled, or failed once it reached the attempt limit). verl runs are left to
``verl_runs.verl_runs_reconcile``, which asks their jobs.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction

from controlplane.datasets.services import dataset_export
from controlplane.operations.logs import log_context
from controlplane.runs import services as run_services
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import (
    VERL,
    run_attempt_end,
    run_claim,
    run_heartbeat,
    run_lose,
    runs_stale,
    worker_name,
)
from workers.engines.config import ConfigError, FieldError, RunConfig
from workers.engines.telemetry import TelemetrySink

log = logging.getLogger(__name__)


# -- where --------------------------------------------------------------------------------------
def local_run_directory(run_id: int) -> Path:
    """The run's folder on this worker: exported data, the engine's checkpoints and journal."""
    return Path(settings.EDGEPLANE_RUNS_DIR) / f"run-{run_id}"


# -- proof of life and fencing --------------------------------------------------------------------
class AttemptReplaced(Exception):
    """This attempt no longer owns its run (judged lost and requeued, or replaced): its engine stops."""


class Keepalive:
    """Stamps the attempt's heartbeat (``run_heartbeat``: the database's clock) from a background
    thread every EDGEPLANE_HEARTBEAT_STALE_SECONDS / 4 while the engine runs in this process, so a
    step, evaluation or checkpoint longer than the stale threshold is not taken for a lost
    worker. It beats while the process and the thread that started it live: a killed or frozen
    worker goes stale as before. ``replaced`` is set once the run is no longer this attempt's."""

    def __init__(self, *, run_id: int, attempt: int) -> None:
        self.run_id, self.attempt = run_id, attempt
        self.every = max(0.25, settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS / 4)
        self.replaced = threading.Event()
        self._stop = threading.Event()
        self._owner = threading.current_thread()
        # In a copy of the starter's context: the thread's log lines carry its run and attempt.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._beat,),
                                        name=f"keepalive-run-{run_id}-a{attempt}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.every) and self._owner.is_alive():
                try:
                    if not run_heartbeat(run_id=self.run_id, attempt=self.attempt):
                        log.warning("run %s: attempt %s no longer owns the run; its engine stops at its next event",
                                    self.run_id, self.attempt)
                        self.replaced.set()
                        return
                except DatabaseError as exc:  # a passing outage: the next beat tries again
                    log.warning("run %s: heartbeat not stored: %s", self.run_id, exc)
                    close_old_connections()
        finally:
            connections.close_all()  # this thread's connection


class AttemptSink:
    """The engine's sink for one attempt: every event goes on only while the attempt still owns
    its active run. A replaced attempt (judged lost, requeued, another attempt started) stops at
    its next event with AttemptReplaced, writes no checkpoint, evaluation or journal line after
    it learned so, and its ending is dropped: it never writes over its successor's run."""

    def __init__(self, inner: TelemetrySink, *, run_id: int, attempt: int, keepalive: Keepalive) -> None:
        self.inner, self.run_id, self.attempt, self.keepalive = inner, run_id, attempt, keepalive

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # any other sink method an engine calls goes straight on

    def _owned(self) -> bool:
        return not self.keepalive.replaced.is_set() and Run.objects.filter(
            pk=self.run_id, attempts_count=self.attempt, status__in=[RunStatus.STARTING, RunStatus.RUNNING]).exists()

    def _check(self, event: str) -> None:
        if not self._owned():
            raise AttemptReplaced(f"run {self.run_id}: attempt {self.attempt} was replaced (judged lost and requeued); "
                                  f"its {event} is dropped and it stops")

    def run_started(self, **kwargs: Any) -> None:
        self._check("start")
        self.inner.run_started(**kwargs)

    def step(self, record: Any) -> Any:
        self._check(f"step {record.step}")
        return self.inner.step(record)  # the ingest fences it again, in the step's transaction

    def evaluation(self, record: dict[str, Any]) -> None:
        self._check("evaluation")
        self.inner.evaluation(record)

    def checkpoint_saved(self, **kwargs: Any) -> None:
        self._check("checkpoint")
        self.inner.checkpoint_saved(**kwargs)

    def heartbeat(self, **kwargs: Any) -> Any:
        self._check("heartbeat")
        return self.inner.heartbeat(**kwargs)  # the control answer: a warm-up stops on cancel

    def run_finished(self, *, status: Any, reason: str) -> None:
        with transaction.atomic():
            # The run's row stays locked until the end is stored: no reconciler can requeue it meanwhile.
            owned = Run.objects.select_for_update().filter(pk=self.run_id, attempts_count=self.attempt, status__in=[
                RunStatus.STARTING, RunStatus.RUNNING]).exists()
            if not owned or self.keepalive.replaced.is_set():
                log.info("run %s: attempt %s was replaced; its ending (%s: %s) is dropped", self.run_id,
                         self.attempt, status, reason)
                return
            self.inner.run_finished(status=status, reason=reason)


@contextlib.contextmanager
def previous_attempt_stopped(*, folder: Path, run_id: int, attempt: int) -> Iterator[bool]:
    """Hold the run folder's lock while this attempt trains. An attempt judged lost while its
    process lives (a freeze, a slow phase) still holds it until it reaches its next event and
    stops; its successor on this machine waits for that, so the two never write the same
    checkpoints and journal. Bounded by EDGEPLANE_HEARTBEAT_STALE_SECONDS (at least a minute): a
    process wedged longer is left behind (its events are fenced). Yields whether the lock was taken."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "attempt.lock").open("a+") as handle:
        deadline = time.monotonic() + max(60, settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS)
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("run %s: the attempt before %s still holds %s; starting anyway", run_id, attempt,
                                folder / "attempt.lock")
                    locked = False
                    break
                if not said:
                    said = True
                    Run.objects.filter(pk=run_id, attempts_count=attempt, status=RunStatus.STARTING).update(
                        status_reason=f"attempt {attempt} waits for the attempt before it on this worker to stop "
                                      "(judged lost while its process lives; it stops at its next step boundary)")
                time.sleep(0.5)
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


# -- launch and execute -------------------------------------------------------------------------
def local_run_execute(*, run_id: int) -> str:
    """Claim the run and train it in this process with the local engine; returns the status.

    While it trains a keepalive thread stamps its heartbeat; an attempt replaced meanwhile
    stops quietly ("replaced") and leaves the run to its successor, which resumes from the last
    checkpoint."""
    from controlplane.telemetry.services import ControlPlaneSink
    from workers.engines.telemetry import JsonlSink, TeeSink

    if Run.objects.filter(pk=run_id, engine=VERL).exists():
        run_services.run_enqueue(run_id=run_id)  # a verl run is submitted from the verl queue, never trained here
        return "handed-to-verl-queue"
    attempt = run_claim(run_id=run_id, worker=worker_name())
    if attempt is None:
        log.info("run %s: nothing to claim (already started, finished or cancelled)", run_id)
        return "not-claimed"
    run = attempt.run
    folder = local_run_directory(run.id)
    # Every line logged while this attempt trains (the engine's, the keepalive thread's) carries run_id and attempt.
    with log_context(run_id=run.id, attempt=attempt.number), \
            Keepalive(run_id=run.id, attempt=attempt.number) as keepalive, \
            previous_attempt_stopped(folder=folder, run_id=run.id, attempt=attempt.number):
        try:
            train_path, test_path = dataset_export(dataset=run.dataset, folder=folder / "data")
            config = RunConfig.from_mapping({**run.config, "dataset": str(train_path),
                                             "eval_dataset": str(test_path) if test_path else ""})
            if config.engine != "local":
                raise ConfigError([FieldError("engine", f"engine {config.engine!r} is launched by its own worker")])
            from workers.engines.local.engine import LocalEngine

            # The control plane is the record; a JSON-lines copy in the run folder helps debugging.
            journal = JsonlSink(folder / "engine")
            sink = AttemptSink(TeeSink(ControlPlaneSink(run.id, attempt.number), journal), run_id=run.id,
                               attempt=attempt.number, keepalive=keepalive)
            engine = LocalEngine(config, folder / "engine", sink, var_dir=Path(settings.EDGEPLANE_VAR_DIR))
            resume = (engine.checkpoint_dir / "latest").is_file()
            if resume:
                journal.truncate_after(engine.saved_step())
            elif journal.path.exists():
                journal.path.unlink()  # an attempt that died before its first checkpoint
            status = engine.run(resume=resume)
            return str(status)
        except Exception as exc:
            if isinstance(exc, AttemptReplaced) or isinstance(exc.__cause__ or exc.__context__, AttemptReplaced):
                log.info("run %s: attempt %s stopped: %s", run_id, attempt.number, exc)
                return "replaced"
            log.exception("run %s failed", run_id)
            # Only while this attempt still owns the run: a replaced one leaves it to its successor.
            if not run_attempt_end(run_id=run.id, attempt=attempt.number, status=RunStatus.FAILED,
                                   reason=f"{type(exc).__name__}: {exc}"):
                return "replaced"
            return RunStatus.FAILED


# -- reconcile ----------------------------------------------------------------------------------
def local_runs_reconcile(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Mark runs with a stale heartbeat lost; requeue them to resume, up to the attempt limit.

    Staleness is judged on the database's clock (``run_services.stale_before``); ``now`` (tests)
    looks ahead of this machine's present. verl runs are left to
    ``verl_runs.verl_runs_reconcile``: their job's state is asked of Ray (or the local
    process), on the gpu-worker that can see it.
    """
    outcome: dict[str, list[int]] = {"requeued": [], "failed": []}
    candidates = runs_stale(Run.objects.exclude(engine=VERL), now=now).values_list("pk", flat=True)
    for run_id in list(candidates):
        run_lose(run_id=run_id, now=now, reason="heartbeat stale: the worker stopped reporting", outcome=outcome)
    return outcome
