"""Runs, their attempts, and everything each step reported.

Telemetry tables are append-only per (run, step) and indexed by (run, step) and
(run, prompt_key); a replayed step replaces its rows (telemetry service).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_STOPPED = "budget_stopped"
    LOST = "lost"


ACTIVE = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_STOPPED)


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
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["status", "heartbeat_at"])]

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


class StepSummary(models.Model):
    """One row per (run, step): the accounting of SELECTORS.md section 7 and the step's metrics."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    step = models.PositiveIntegerField()
    epoch = models.PositiveIntegerField(default=0)
    rollouts_generated = models.PositiveIntegerField()
    tokens_generated = models.PositiveBigIntegerField()
    rollouts_effective = models.PositiveIntegerField()
    rollouts_trained = models.PositiveIntegerField()
    rollouts_uniform = models.PositiveIntegerField()
    groups_generated = models.PositiveIntegerField()
    groups_all_correct = models.PositiveIntegerField()
    groups_all_wrong = models.PositiveIntegerField()
    groups_trained = models.PositiveIntegerField()
    forward_tokens_extra = models.PositiveBigIntegerField()
    backward_tokens = models.PositiveBigIntegerField()
    # Counts added later default to 0 in the database too (db_default), so that rows written
    # by SQL that predates them (COPY, INSERT ... SELECT in the benches) still go in.
    prompt_tokens_generated = models.PositiveBigIntegerField(default=0, db_default=0)
    backward_prompt_tokens = models.PositiveBigIntegerField(default=0, db_default=0)
    # The yardsticks beyond uniform GRPO (workers.selection.accounting.YARDSTICKS). Rates and
    # estimates are NULL where the engine had none (it sends NaN): no mixed group seen yet.
    groups_uniform = models.PositiveIntegerField(default=0, db_default=0)
    groups_uniform_mixed = models.PositiveIntegerField(default=0, db_default=0)
    mixed_rate_uniform = models.FloatField(null=True)
    groups_mixed_collected = models.PositiveIntegerField(default=0, db_default=0)
    rollouts_dynamic_sampling = models.FloatField(null=True)
    backward_tokens_mixed = models.PositiveBigIntegerField(default=0, db_default=0)
    rollout_savings = models.FloatField()
    rollout_savings_vs_dynamic_sampling = models.FloatField(null=True)
    backward_savings_vs_mixed = models.FloatField(null=True)
    effective_share_of_generated = models.FloatField()
    flops_estimate = models.FloatField()
    flops_uniform_estimate = models.FloatField()
    device_seconds = models.FloatField()
    uniform_device_seconds = models.FloatField()
    reward_mean = models.FloatField(null=True)
    loss = models.FloatField(null=True)
    seconds = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    train = models.JSONField(default=dict)
    alerts = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_summary_per_step")]


class Evaluation(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="evaluations")
    step = models.PositiveIntegerField()
    k = models.PositiveIntegerField()
    pass_at_1 = models.FloatField()
    pass_at_k = models.FloatField()
    prompts = models.PositiveIntegerField()
    by_difficulty = models.JSONField(default=dict)
    rollouts_generated_total = models.PositiveBigIntegerField(default=0)
    device_seconds_total = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_evaluation_per_step")]


class PromptObservation(models.Model):
    """A prompt's group in one step. Bulk-inserted (COPY on Postgres)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="observations", db_index=False)
    step = models.PositiveIntegerField()
    prompt_key = models.CharField(max_length=255)
    group_size = models.PositiveIntegerField()
    successes = models.PositiveIntegerField()
    pass_rate = models.FloatField()
    response_entropy = models.FloatField(null=True)
    prompt_entropy = models.FloatField(null=True)
    energy = models.FloatField(null=True)
    response_tokens = models.PositiveIntegerField()
    trained = models.BooleanField()
    bucket = models.CharField(max_length=16)

    class Meta:
        indexes = [models.Index(fields=["run", "step"]), models.Index(fields=["run", "prompt_key", "step"])]


class SelectionDecision(models.Model):
    """One method's act on one prompt (SELECTORS.md section 8). Bulk-inserted."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="decisions", db_index=False)
    step = models.PositiveIntegerField()
    prompt_key = models.CharField(max_length=255)
    layer = models.CharField(max_length=16)
    method = models.CharField(max_length=16)
    action = models.CharField(max_length=16)
    reason = models.CharField(max_length=48)
    scores = models.JSONField(default=dict)
    message = models.TextField()

    class Meta:
        indexes = [
            models.Index(fields=["run", "step"]),
            models.Index(fields=["run", "prompt_key", "step"]),
            models.Index(fields=["run", "method", "action", "step"]),
        ]


class Bucket(models.TextChoices):
    UNSEEN = "unseen"
    TOO_EASY = "too_easy"
    EDGE = "edge"
    TOO_HARD = "too_hard"
    PRUNED = "pruned"
    STALE = "stale"


class PromptState(models.Model):
    """Where each prompt stands against the learning edge in a run, now."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="prompt_states", db_index=False)
    prompt_key = models.CharField(max_length=255)
    bucket = models.CharField(max_length=16, choices=Bucket.choices)
    pass_rate = models.FloatField(null=True)
    response_entropy = models.FloatField(null=True)
    prompt_entropy = models.FloatField(null=True)
    visits = models.PositiveIntegerField(default=0)
    last_step = models.IntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "prompt_key"], name="one_state_per_prompt")]
        indexes = [models.Index(fields=["run", "bucket"])]
