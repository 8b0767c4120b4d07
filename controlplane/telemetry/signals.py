"""A run's telemetry partitions follow the run: made when it is made, detached when it is deleted
(``partitions.run_rows_drop``; beat's purge drops them later).

Every way a run comes to be (``run_create``, a clone, ``Run.objects.create`` in a test or a
shell) and every way it goes (the run, its team, a queryset delete) passes Django's model
signals, so the partitions are handled here rather than in each service.
"""

from __future__ import annotations

from django.db.models.signals import post_save, pre_delete
from django.dispatch import receiver

from controlplane.runs.models import Run
from controlplane.telemetry.partitions import run_partitions_create, run_rows_drop


@receiver(post_save, sender=Run, dispatch_uid="telemetry-run-partitions-create")
def _run_created(sender, instance: Run, created: bool, **kwargs) -> None:
    if created:
        run_partitions_create(instance.pk)


@receiver(pre_delete, sender=Run, dispatch_uid="telemetry-run-rows-drop")
def _run_deleted(sender, instance: Run, **kwargs) -> None:
    # Before Django's CASCADE: its DELETE then finds no partition of the run left to scan.
    run_rows_drop(instance.pk)
