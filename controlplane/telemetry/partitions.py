"""Removing a run's per-prompt rows (observations, decisions) from the database.

Placeholder of the retention work: plain DELETEs of both tables. The partitioned tables' own
version (a constant-time drop of the run's partitions) replaces this file; callers
(``controlplane.telemetry.retention``) depend only on ``run_rows_drop``'s name and signature."""

from __future__ import annotations

from controlplane.telemetry.models import PromptObservation, SelectionDecision


def run_rows_drop(run_id: int) -> None:
    """Delete every observation and decision row of the run (inside the caller's transaction)."""
    PromptObservation.objects.filter(run_id=run_id).delete()
    SelectionDecision.objects.filter(run_id=run_id).delete()
