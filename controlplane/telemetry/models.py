"""What engines report, and the tokens they report with.

The per-step and per-prompt tables written by ingestion (``telemetry.services``): step
summaries, evaluations, prompt observations, selection decisions and prompt states. They are
append-only per (run, step) and indexed by (run, step) and (run, prompt_key); a replayed step
replaces its rows. They were created by the runs app and keep its table names (``db_table``);
migration telemetry 0002 moved them here in Django's state only.

Run tokens: what a remote engine presents to the ingestion endpoint."""

from __future__ import annotations

import secrets

from django.db import models

from workers.selection.ledger import Bucket as LedgerBucket


def new_key() -> str:
    return secrets.token_urlsafe(32)


class RunToken(models.Model):
    """Scoped to one run; revoked when the run ends."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="tokens")
    key = models.CharField(max_length=64, unique=True, default=new_key)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)


class StepSummary(models.Model):
    """One row per (run, step): the accounting of docs/algorithms.md §7 and the step's metrics."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="steps")
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
    effective_share_of_generated = models.FloatField(null=True)  # None: no rollout generated this step
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
        db_table = "runs_stepsummary"  # created by the runs app; the table kept its name
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_summary_per_step")]


class Evaluation(models.Model):
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="evaluations")
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
        db_table = "runs_evaluation"  # created by the runs app; the table kept its name
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_evaluation_per_step")]


class StepRangeIndex(models.Index):
    """An index on ``step`` for range reads and per-step deletes: BRIN on Postgres (rows arrive in
    step order, so a block range holds a few consecutive steps; it costs COPY next to nothing),
    a btree elsewhere (SQLite has no BRIN)."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor == "postgresql":
            using = " USING brin"
        return super().create_sql(model, schema_editor, using=using, **kwargs)


# Decisions and observations: on Postgres one partition per run (telemetry.partitions, migration
# 0004), so their indexes hold no run_id (constant inside a partition), and no foreign key
# constraint ties them to runs_run: its per-row deferred trigger halves COPY. Deleting a run
# detaches its partitions (telemetry.signals; beat drops them later); Django's CASCADE still
# deletes any row left (SQLite).


class PromptObservation(models.Model):
    """A prompt's group in one step. Bulk-inserted (COPY on Postgres)."""

    run = models.ForeignKey(
        "runs.Run", on_delete=models.CASCADE, related_name="observations", db_index=False, db_constraint=False
    )
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
        db_table = "runs_promptobservation"  # created by the runs app; the table kept its name
        # Per run partition: a prompt's history (prompt page, heat map cells), and a step or a
        # range of steps (learning-edge map of a step, energy, heat-map ranking, replace, resume).
        indexes = [
            models.Index(fields=["prompt_key", "step"], name="observation_prompt_step"),
            StepRangeIndex(fields=["step"], name="observation_step_range"),
        ]


class SelectionDecision(models.Model):
    """One method's act on one prompt (docs/algorithms.md §8). Bulk-inserted."""

    run = models.ForeignKey(
        "runs.Run", on_delete=models.CASCADE, related_name="decisions", db_index=False, db_constraint=False
    )
    step = models.PositiveIntegerField()
    prompt_key = models.CharField(max_length=255)
    layer = models.CharField(max_length=16)
    method = models.CharField(max_length=16)
    action = models.CharField(max_length=16)
    reason = models.CharField(max_length=48)
    scores = models.JSONField(default=dict)
    message = models.TextField()

    class Meta:
        db_table = "runs_selectiondecision"  # created by the runs app; the table kept its name
        # Per run partition: a prompt's decisions (the per-prompt audit), and a btree led by step:
        # the audit trail and the recent decisions read in step order (a BRIN cannot order), the
        # audit's method and action filters are checked in the index before any row is read, a
        # replayed step deletes one step. On Postgres the primary key is (run_id, id) (a
        # partitioned table's key holds its partition key): the API pages a run's decisions in id
        # order through it. run_id closes the second key: it let the decisions chart count from the
        # index alone, before the chart read StepDecisionCount (kept: changing it rebuilds every
        # run's partition index).
        indexes = [
            models.Index(fields=["prompt_key", "step"], name="decision_prompt_step"),
            models.Index(fields=["step", "method", "action", "run"], name="decision_step_method_action"),
        ]


class StepDecisionCount(models.Model):
    """How many decisions a step made per (method, action, successes score), and their summed
    ``extra`` score: a few rows a step, from which the decisions-per-step and HORA charts are
    drawn instead of from the step's decision rows (a step of a large run holds thousands).

    ``successes`` and ``extra`` are the decisions' scores of those names where they have them:
    HORA's allocation carries its probe's successes and the extra rollouts it gave (NULL and 0
    for decisions without them). Written with the step's decisions at ingest, replaced with them
    when a step is replayed and deleted with them on a resume; kept when a run's per-prompt rows
    are archived (``telemetry.retention``), so those two charts stay whole for an archived run."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="decision_counts", db_index=False)
    step = models.PositiveIntegerField()
    method = models.CharField(max_length=16)
    action = models.CharField(max_length=16)
    successes = models.FloatField(null=True)
    decisions = models.PositiveIntegerField()
    extra = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["run", "step"], name="decision_count_run_step")]


# The learning-edge buckets as database choices, from their one home (the prompt ledger's).
Bucket = models.TextChoices("Bucket", [(name.upper(), name) for name in LedgerBucket.NAMES])


class PromptState(models.Model):
    """Where each prompt stands against the learning edge in a run, now."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="prompt_states", db_index=False)
    prompt_key = models.CharField(max_length=255)
    bucket = models.CharField(max_length=16, choices=Bucket.choices)
    pass_rate = models.FloatField(null=True)
    response_entropy = models.FloatField(null=True)
    prompt_entropy = models.FloatField(null=True)
    visits = models.PositiveIntegerField(default=0)
    last_step = models.IntegerField()

    class Meta:
        db_table = "runs_promptstate"  # created by the runs app; the table kept its name
        constraints = [models.UniqueConstraint(fields=["run", "prompt_key"], name="one_state_per_prompt")]
        # (run, bucket): counts per bucket; (run, -last_step, prompt_key): the learning-edge map's
        # most recently seen prompts, read in index order instead of sorting every state of the run.
        # It carries the map's other columns (INCLUDE, Postgres) so that a finished run's map is an
        # index-only scan: a few consecutive leaf pages, where fetching 4,000 rows from a heap that
        # is not in memory took 72 ms median at 100M decisions (bench/telemetry_scale.py).
        indexes = [
            models.Index(fields=["run", "bucket"]),
            models.Index(fields=["run", "-last_step", "prompt_key"], name="state_run_recent_map",
                         include=["pass_rate", "response_entropy", "bucket"]),
        ]
