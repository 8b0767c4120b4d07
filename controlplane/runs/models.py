"""Runs and their attempts. What each step reported lives in the telemetry app
(``controlplane.telemetry.models``)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from workers.record import RunStatus as EngineRunStatus


class RunStatus(models.TextChoices):
    """A run's (and an attempt's) status. The final words an engine reports are the engine's
    (``workers.record.RunStatus``, a StrEnum the engines use without Django): taken
    from there. The others are the control plane's alone: a run waits, is claimed, runs, or
    is lost with its worker; no engine ever says them."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = EngineRunStatus.SUCCEEDED.value
    FAILED = EngineRunStatus.FAILED.value
    CANCELLED = EngineRunStatus.CANCELLED.value
    BUDGET_STOPPED = EngineRunStatus.BUDGET_STOPPED.value
    LOST = "lost"


ACTIVE = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)
FINISHED = tuple(RunStatus(status.value) for status in EngineRunStatus)  # what an engine reports at its end


class Run(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="runs")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.PROTECT, related_name="runs")
    name = models.CharField(max_length=200)
    # The run this one is judged against (compare page: the cost to reach its final Pass@1).
    # Same team only, checked by run_create; a deleted baseline leaves the run without one.
    baseline = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="baseline_for",
                                 help_text="a run of the same team this run is compared against")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    config = models.JSONField(help_text="RunConfig.to_dict(), validated by workers.engines.config.RunConfig")
    methods = models.JSONField(default=list, help_text="selector names, for filtering")
    # Short labels a team files its runs under (runs.tags.tags_clean: lowercase, 1-32 letters,
    # digits, -, _ or ., at most 16); the runs list filters by one.
    tags = models.JSONField(default=list, blank=True, help_text="short labels, e.g. [\"ablation\", \"hive\"]")
    engine = models.CharField(max_length=16, default="local")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    status_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancel_requested_at = models.DateTimeField(null=True, blank=True,
                                               help_text="when the cancel was asked; a verl job still running "
                                                         "EDGEPLANE_CANCEL_GRACE_SECONDS later is stopped")
    forecast_device_hours = models.FloatField(default=0.0)
    steps_completed = models.PositiveIntegerField(default=0)
    attempts_count = models.PositiveIntegerField(default=0)
    last_checkpoint_step = models.IntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The supervised warm-up's progress, from the warm-up's heartbeats (telemetry.heartbeat_ingest):
    # steps done of the total. Kept once RL starts (what the warm-up did); ``warmup_attempt`` is the
    # attempt warming up now, cleared when its RL starts, so a later attempt never shows the
    # figures of one that was lost until it reports its own.
    warmup_step = models.PositiveIntegerField(null=True, blank=True,
                                              help_text="supervised warm-up steps done, as last reported")
    warmup_steps = models.PositiveIntegerField(null=True, blank=True, help_text="the warm-up's total steps")
    warmup_attempt = models.PositiveIntegerField(null=True, blank=True,
                                                 help_text="the attempt warming up now; null once its RL started")
    # The launch's outbox: the run is stored first, its launch message sent after the commit.
    # Null until a send reached the broker; beat re-sends the message of a run queued
    # EDGEPLANE_LAUNCH_RESEND_SECONDS past this without a claim (runs.services.run_launches_resend).
    launch_sent_at = models.DateTimeField(null=True, blank=True,
                                          help_text="when the launch message last reached the broker")
    # The client's Idempotency-Key header: a retried launch returns this run, never a second one.
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    request_fingerprint = models.CharField(max_length=64, blank=True, default="",
                                           help_text="sha256 of the launch request stored with its idempotency key")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Per-prompt telemetry archived (controlplane.telemetry.retention): the run's observations and
    # decisions live in Parquet files under EDGEPLANE_ARCHIVE_DIR/<telemetry_archive_path>/, not in
    # the database. The path is set first (an archive begun: the run may not be resumed), the time
    # once the rows are removed from the database; readers go to the files only then.
    telemetry_archive_path = models.CharField(max_length=255, blank=True, default="",
                                              help_text="folder of the Parquet archive, under EDGEPLANE_ARCHIVE_DIR")
    telemetry_archived_at = models.DateTimeField(null=True, blank=True,
                                                 help_text="when the per-prompt rows left the database for the archive")

    class Meta:
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["status", "heartbeat_at"])]
        constraints = [models.UniqueConstraint(fields=["team", "idempotency_key"], name="run_idempotency_key_unique",
                                               condition=~models.Q(idempotency_key=""))]

    def __str__(self) -> str:
        return f"run {self.pk} {self.name}"

    def clean(self) -> None:
        """A baseline of another team (or the run itself) is refused here too: the admin's
        forms call this; run_create checks the team for the API and the dashboard."""
        if self.baseline_id is None:
            return
        if self.baseline.team_id != self.team_id:
            raise ValidationError({"baseline": "the baseline must be a run of the same team"})
        if self.baseline_id == self.pk:
            raise ValidationError({"baseline": "a run cannot be its own baseline"})

    @property
    def steps_planned(self) -> int:
        return int(self.config.get("steps", 0))


class Attempt(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.STARTING)
    worker = models.CharField(max_length=255, blank=True)
    job_id = models.CharField(max_length=255, blank=True,
                              help_text="the attempt's job outside the worker (verl): its Ray submission id, "
                                        "or pid:<n> for a local process; empty for in-worker engines")
    resumed_from_step = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="attempt_number_unique")]
