"""The worker's log lines of each run (controlplane/operations/run_logs.py captures them), read by the
run page's logs panel. The other operations data (health, metrics) live outside the database."""

from __future__ import annotations

from django.db import models


class RunLogLine(models.Model):
    """One line a worker logged while a run's task executed: the same record its JSON line on stderr
    carries (time, level, logger, message), stored so the run page can show it live.

    ``seq`` numbers a run's lines in the order they were logged, across attempts; lines dropped (the
    cap keeps the newest, or the database was away too long) leave gaps, so the newest ``seq`` less
    the lines kept is how many were dropped."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="log_lines", db_index=False)
    attempt = models.PositiveIntegerField(null=True, blank=True, help_text="null before the attempt was claimed")
    seq = models.BigIntegerField()
    at = models.DateTimeField()
    level = models.PositiveSmallIntegerField(help_text="logging's number: 10 DEBUG .. 50 CRITICAL")
    logger = models.CharField(max_length=200)
    message = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["run", "id"], name="runlogline_run_id"),
                   models.Index(fields=["run", "seq"], name="runlogline_run_seq")]

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.seq} {self.message[:60]}"
