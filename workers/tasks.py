"""Celery tasks: thin. Each takes ids and calls one service (imported inside, so the
worker starts without Django models loaded at import time)."""

from __future__ import annotations

from controlplane.celery import app


@app.task(name="edgeplane.launch_run", acks_late=True, reject_on_worker_lost=True)
def launch_run(run_id: int) -> str:
    """Claim and train a run. The claim is atomic: a redelivered message cannot start it twice."""
    from controlplane.runs.services import run_execute

    return run_execute(run_id=run_id)


@app.task(name="edgeplane.reconcile_runs")
def reconcile_runs() -> dict[str, list[int]]:
    """Beat: runs whose heartbeat went stale are marked lost and requeued to resume."""
    from controlplane.runs.services import runs_reconcile

    return runs_reconcile()
