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

import logging
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from controlplane.datasets.services import dataset_export
from controlplane.runs import services as run_services
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import VERL, run_claim, run_lose, worker_name
from workers.engines.config import ConfigError, FieldError, RunConfig

log = logging.getLogger(__name__)


# -- where --------------------------------------------------------------------------------------
def local_run_directory(run_id: int) -> Path:
    """The run's folder on this worker: exported data, the engine's checkpoints and journal."""
    return Path(settings.EDGEPLANE_RUNS_DIR) / f"run-{run_id}"


# -- launch and execute -------------------------------------------------------------------------
def local_run_execute(*, run_id: int) -> str:
    """Claim the run and train it in this process with the local engine; returns the status."""
    from controlplane.telemetry.services import ControlPlaneSink, IngestError, run_finished_ingest
    from workers.engines.telemetry import JsonlSink, TeeSink

    if Run.objects.filter(pk=run_id, engine=VERL).exists():
        run_services.run_enqueue(run_id=run_id)  # a verl run is submitted from the verl queue, never trained here
        return "handed-to-verl-queue"
    attempt = run_claim(run_id=run_id, worker=worker_name())
    if attempt is None:
        log.info("run %s: nothing to claim (already started, finished or cancelled)", run_id)
        return "not-claimed"
    run = attempt.run
    try:
        folder = local_run_directory(run.id)
        train_path, test_path = dataset_export(dataset=run.dataset, folder=folder / "data")
        config = RunConfig.from_mapping({**run.config, "dataset": str(train_path),
                                         "eval_dataset": str(test_path) if test_path else ""})
        if config.engine != "local":
            raise ConfigError([FieldError("engine", f"engine {config.engine!r} is launched by its own worker")])
        from workers.engines.local.engine import LocalEngine

        # The control plane is the record; a JSON-lines copy in the run folder helps debugging.
        journal = JsonlSink(folder / "engine")
        engine = LocalEngine(config, folder / "engine", TeeSink(ControlPlaneSink(run.id, attempt.number), journal),
                             var_dir=Path(settings.EDGEPLANE_VAR_DIR))
        resume = (engine.checkpoint_dir / "latest").is_file()
        if resume:
            journal.truncate_after(engine.saved_step())
        elif journal.path.exists():
            journal.path.unlink()  # an attempt that died before its first checkpoint
        status = engine.run(resume=resume)
        return str(status)
    except Exception as exc:
        log.exception("run %s failed", run_id)
        try:
            run_finished_ingest(run_id=run.id, status=RunStatus.FAILED, reason=f"{type(exc).__name__}: {exc}",
                                attempt=attempt.number)
        except IngestError:
            pass  # this attempt was replaced meanwhile: the run is someone else's now
        return RunStatus.FAILED


# -- reconcile ----------------------------------------------------------------------------------
def local_runs_reconcile(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Mark runs with a stale heartbeat lost; requeue them to resume, up to the attempt limit.

    verl runs are left to ``verl_runs.verl_runs_reconcile``: their job's state is asked of
    Ray (or the local process), on the gpu-worker that can see it.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS)
    outcome: dict[str, list[int]] = {"requeued": [], "failed": []}
    candidates = Run.objects.filter(status__in=[RunStatus.STARTING, RunStatus.RUNNING],
                                    heartbeat_at__lt=stale_before).exclude(engine=VERL).values_list("pk", flat=True)
    for run_id in list(candidates):
        run_lose(run_id=run_id, now=now, stale_before=stale_before,
                 reason="heartbeat stale: the worker stopped reporting", outcome=outcome)
    return outcome
