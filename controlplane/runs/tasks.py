"""Celery tasks: thin. Each takes ids and calls one service, imported inside so the
worker's task registry loads without pulling in either engine.

The names (``edgeplane.*``) are the wire format: messages queued before an upgrade name
them, and ``settings.CELERY_TASK_ROUTES`` routes by them. Found by Celery's autodiscovery
(``controlplane/celery.py``); services enqueue by name (``runs.services.run_enqueue``), so no
service imports this module.
"""

from __future__ import annotations

from controlplane.celery import app


@app.task(name="edgeplane.launch_run", acks_late=True, reject_on_worker_lost=True)
def launch_run(run_id: int) -> str:
    """Claim and train a run. The claim is atomic: a redelivered message cannot start it twice."""
    from controlplane.operations.logs import log_context
    from controlplane.runs.local_runs import local_run_execute

    with log_context(run_id=run_id):  # every line logged meanwhile carries the run (and, once claimed, the attempt)
        return local_run_execute(run_id=run_id)


@app.task(name="edgeplane.reconcile_runs")
def reconcile_runs() -> dict[str, list[int]]:
    """Beat: runs whose heartbeat went stale are marked lost and requeued to resume; runs queued
    too long without a claim get their launch message again ("resent"). verl runs
    are asked of their jobs by reconcile_verl_runs, sent from here only while there are some:
    its queue has a consumer only where a gpu-worker runs, and unconsumed messages pile up."""
    from django.conf import settings

    from controlplane.runs.local_runs import local_runs_reconcile
    from controlplane.runs.services import run_launches_resend
    from controlplane.runs.verl_runs import verl_runs_active

    outcome = local_runs_reconcile()
    outcome["resent"] = run_launches_resend()
    if verl_runs_active():
        reconcile_verl_runs.apply_async(expires=float(settings.EDGEPLANE_RECONCILE_SECONDS))
    return outcome


@app.task(name="edgeplane.launch_verl_run", acks_late=True, reject_on_worker_lost=True)
def launch_verl_run(run_id: int) -> str:
    """Claim a verl run and submit its job (Ray Jobs, or a local process); returns the job's
    handle. Short: the job trains outside the worker. Routed to the verl queue (settings)."""
    from controlplane.operations.logs import log_context
    from controlplane.runs.verl_runs import verl_run_launch

    with log_context(run_id=run_id):
        return verl_run_launch(run_id=run_id)


@app.task(name="edgeplane.reconcile_verl_runs")
def reconcile_verl_runs() -> dict[str, list[int]]:
    """On the verl queue, sent by reconcile_runs: ask each active verl run's job how it is; end runs whose job
    ended, stop jobs that outlive a cancel's grace period, requeue launches that died."""
    from controlplane.runs.verl_runs import verl_runs_reconcile

    return verl_runs_reconcile()
