"""Celery tasks of telemetry: thin, each calls one service. Names are the wire format."""

from __future__ import annotations

from controlplane.celery import app


@app.task(name="edgeplane.telemetry_retention")
def telemetry_retention() -> list[dict]:
    """Beat: archive the per-prompt telemetry of runs past their team's retention, at most
    EDGEPLANE_RETENTION_RUNS_PER_PASS runs a pass (the rest wait for the next)."""
    from django.conf import settings

    from controlplane.telemetry.retention import retention_apply

    return [o.as_dict() for o in retention_apply(limit=settings.EDGEPLANE_RETENTION_RUNS_PER_PASS)]


@app.task(name="edgeplane.dropped_partitions_purge")
def dropped_partitions_purge() -> list[str]:
    """Beat: drop the partitions that deleted and archived runs left detached (their rows left
    every query when the run went); returns the tables dropped."""
    from controlplane.telemetry.partitions import dropped_partitions_purge as purge

    return purge()
