"""Reads for runs and their telemetry. Another team's run is simply not found.

Every query starts from a run the caller may see (``run_for_user_or_none``), so the
telemetry selectors take a ``Run`` and never a bare id from the outside.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet, Sum

from controlplane.runs.models import Attempt, Run
from controlplane.telemetry.models import (
    Bucket,
    Evaluation,
    PromptState,
    SelectionDecision,
    StepSummary,
)
from workers.selection.accounting import RunTotals
from workers.selection.params import SelectionConfigError
from workers.selection.pipeline import Pipeline

# The most rows one cursor read of steps or evaluations returns; the caller asks again
# with the answer's ``next_after`` for the rest.
CURSOR_LIMIT = 1000


def runs_for_user(user, *, status: str | None = None, method: str | None = None,
                  dataset: int | None = None, team: str | None = None) -> QuerySet[Run]:
    """The runs of every team the user belongs to, newest first, optionally filtered.

    ``method`` matches runs whose config lists that selector; ``team`` is a team slug.
    """
    runs = (Run.objects.filter(team__memberships__user=user)
            .select_related("team", "dataset", "created_by").order_by("-id"))
    if status:
        runs = runs.filter(status=status)
    if method:
        runs = runs.filter(config__selectors__has_key=method)
    if dataset is not None:
        runs = runs.filter(dataset_id=dataset)
    if team:
        runs = runs.filter(team__slug=team)
    return runs


def run_for_user_or_none(user, run_id: int) -> Run | None:
    """The run if the user is a member of its team, else None (callers answer 404)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return runs_for_user(user).filter(pk=run_id).first()


def steps_after(run: Run, after: int = -1, *, limit: int = CURSOR_LIMIT) -> list[StepSummary]:
    """Step summaries with step > ``after``, in step order (at most ``limit``)."""
    return list(StepSummary.objects.filter(run=run, step__gt=after).order_by("step")[:limit])


def evaluations_after(run: Run, after: int = -1, *, limit: int = CURSOR_LIMIT) -> list[Evaluation]:
    """Evaluations at steps > ``after``, in step order (at most ``limit``)."""
    return list(Evaluation.objects.filter(run=run, step__gt=after).order_by("step")[:limit])


def decisions_query(run: Run, *, prompt: str | None = None, method: str | None = None,
                    action: str | None = None, after: int | None = None, step_min: int | None = None,
                    step_max: int | None = None) -> QuerySet[SelectionDecision]:
    """A run's selection decisions, filtered; the caller orders and pages.

    With ``prompt`` the filter meets the (run, prompt_key, step) index; with ``method``
    and ``action`` the (run, method, action, step) one. ``after`` keeps steps > after;
    ``step_min`` and ``step_max`` are inclusive.
    """
    decisions = SelectionDecision.objects.filter(run=run)
    if prompt:
        decisions = decisions.filter(prompt_key=prompt)
    if method:
        decisions = decisions.filter(method=method)
    if action:
        decisions = decisions.filter(action=action)
    if after is not None:
        decisions = decisions.filter(step__gt=after)
    if step_min is not None:
        decisions = decisions.filter(step__gte=step_min)
    if step_max is not None:
        decisions = decisions.filter(step__lte=step_max)
    return decisions


def prompt_states(run: Run, bucket: str | None = None) -> QuerySet[PromptState]:
    """The current learning-edge state of each prompt the run has touched."""
    states = PromptState.objects.filter(run=run)
    if bucket:
        states = states.filter(bucket=bucket)
    return states


def prompt_bucket_counts(run: Run) -> dict[str, int]:
    """Prompts per bucket, every bucket present. Training prompts the run has not touched
    yet have no state row: they count as unseen."""
    counts = {bucket.value: 0 for bucket in Bucket}
    rows = PromptState.objects.filter(run=run).values("bucket").annotate(n=Count("id"))
    for row in rows:
        counts[row["bucket"]] = counts.get(row["bucket"], 0) + row["n"]
    training_prompts = run.dataset.prompts.exclude(split="test").count()
    counts[Bucket.UNSEEN.value] += max(training_prompts - sum(counts.values()), 0)
    return counts


# How each cumulative saving is computed, keyed by its name (a RunTotals property, a step
# summary column), with the yardstick it is measured against (a key of
# workers.selection.accounting.YARDSTICKS, whose words say what that yardstick is). The
# API's help texts and the run page's tooltips read both from here.
SAVINGS: dict[str, tuple[str, str]] = {
    "rollout_savings": ("uniform", (
        "1 - rollouts generated / rollouts uniform GRPO would generate (B x N a step), summed over the steps")),
    "rollout_savings_vs_dynamic_sampling": ("dynamic_sampling", (
        "1 - rollouts generated / rollouts dynamic sampling would generate (mixed groups collected x N / mixed "
        "rate of uniform draws), summed over the steps that have an estimate of that rate")),
    "backward_savings_vs_mixed": ("backward_mixed", (
        "1 - response tokens in the update / response tokens of the mixed groups collected, summed over the "
        "steps")),
}


_WITH_ESTIMATE = Q(rollouts_dynamic_sampling__gt=0)  # NULL (no estimate) is not > 0
# The sums behind RunTotals. Aliases apart from the column names: a filtered Sum of a column
# that is also an alias would read the aggregate, not the column.
_TOTALS = {
    "n": Count("id"), "generated": Sum("rollouts_generated"), "uniform": Sum("rollouts_uniform"),
    "effective": Sum("rollouts_effective"), "trained": Sum("rollouts_trained"), "seconds": Sum("device_seconds"),
    "uniform_seconds": Sum("uniform_device_seconds"),
    "generated_with_estimate": Sum("rollouts_generated", filter=_WITH_ESTIMATE),
    "dynamic_sampling": Sum("rollouts_dynamic_sampling", filter=_WITH_ESTIMATE),
    "backward": Sum("backward_tokens"), "backward_mixed": Sum("backward_tokens_mixed"),
}


def _totals_of(sums: dict) -> RunTotals:
    return RunTotals(
        steps=sums["n"] or 0,
        rollouts_generated=int(sums["generated"] or 0),
        rollouts_uniform=int(sums["uniform"] or 0),
        rollouts_effective=int(sums["effective"] or 0),
        rollouts_trained=int(sums["trained"] or 0),
        device_seconds=float(sums["seconds"] or 0.0),
        uniform_device_seconds=float(sums["uniform_seconds"] or 0.0),
        rollouts_generated_with_estimate=int(sums["generated_with_estimate"] or 0),
        rollouts_dynamic_sampling=float(sums["dynamic_sampling"] or 0.0),
        backward_tokens=int(sums["backward"] or 0),
        backward_tokens_mixed=int(sums["backward_mixed"] or 0),
    )


def run_totals(run: Run, *, through_step: int | None = None) -> RunTotals:
    """The run's step totals, over every recorded step or the steps <= ``through_step`` (the
    base a chart page's running sums continue from). The one place step totals are summed:
    the API, the run page, the runs list, the compare page and the charts read them here."""
    steps = StepSummary.objects.filter(run=run)
    if through_step is not None:
        if through_step < 0:
            return RunTotals()
        steps = steps.filter(step__lte=through_step)
    return _totals_of(steps.aggregate(**_TOTALS))


def runs_totals(runs: Iterable[Run]) -> dict[int, RunTotals]:
    """``run_totals`` of many runs in one query (a page of the runs list), by run id; a run
    without steps gets empty totals."""
    ids = [run.pk for run in runs]
    rows = StepSummary.objects.filter(run_id__in=ids).values("run_id").annotate(**_TOTALS).order_by()
    found = {row["run_id"]: _totals_of(row) for row in rows}
    return {run_id: found.get(run_id, RunTotals()) for run_id in ids}


def run_yardsticks(run: Run) -> list[str]:
    """The yardsticks the run's savings are measured against (uniform GRPO first): what its
    methods, with their parameters, declare (Pipeline.yardsticks)."""
    config = run.config
    try:
        return Pipeline(config.get("selectors") or {}, batch_size=int(config.get("batch_size", 1)),
                        group_size=int(config.get("group_size", 2))).yardsticks()
    except SelectionConfigError:  # stored before a release refused its composition: still readable
        return ["uniform"]


def run_latest_evaluation(run: Run) -> Evaluation | None:
    return Evaluation.objects.filter(run=run).order_by("-step").first()


@dataclass(frozen=True)
class RunDetail:
    """Everything the run page shows at once."""

    run: Run
    attempts: list[Attempt]
    totals: RunTotals
    latest_evaluation: Evaluation | None
    yardsticks: list[str]


def run_detail(run: Run) -> RunDetail:
    return RunDetail(run=run, attempts=list(run.attempts.order_by("number")), totals=run_totals(run),
                     latest_evaluation=run_latest_evaluation(run), yardsticks=run_yardsticks(run))
