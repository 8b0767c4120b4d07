"""Reads for runs and their telemetry. Another team's run is simply not found.

Every query starts from a run the caller may see (``run_for_user_or_none``), so the
telemetry selectors take a ``Run`` and never a bare id from the outside.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Sum

from controlplane.budgets.models import UsageEntry, UsageKind
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.tags import tag_or_none
from controlplane.telemetry.archive import DECISIONS, archive_rows
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
                  dataset: int | None = None, team: str | None = None, tag: str | None = None) -> QuerySet[Run]:
    """The runs of every team the user belongs to, newest first, optionally filtered.

    ``method`` matches runs whose config lists that selector; ``team`` is a team slug;
    ``tag`` matches runs carrying that tag (any case).
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
    if tag:
        runs = runs_tagged(runs, tag)
    return runs


def runs_tagged(runs: QuerySet[Run], raw: str) -> QuerySet[Run]:
    """The runs carrying the tag ``raw`` (compared as stored: lowercase); none when ``raw``
    cannot be a tag."""
    tag = tag_or_none(raw)
    if tag is None:
        return runs.none()
    if connection.vendor == "postgresql":
        return runs.filter(tags__contains=[tag])  # jsonb containment: the element, exactly
    # SQLite has no JSON containment: a tag holds no quote, so its quoted form is one element's text.
    return runs.filter(tags__icontains=f'"{tag}"')


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


class ArchivedDecisions:
    """An archived run's decisions (its Parquet file), answering the few QuerySet calls a
    cursor paginator makes: ``order_by("id")`` / ``order_by("-id")``, ``filter(id__gt=...)`` /
    ``filter(id__lt=...)``, a slice, and ``.model``. Rows come back as unsaved
    ``SelectionDecision`` instances, so serializers and pages are those of the database's."""

    model = SelectionDecision

    def __init__(self, run_id: int, relative: str, filters: dict, order: str = "id",
                 bounds: dict | None = None) -> None:
        self._run_id = run_id
        self._relative, self._filters, self._order, self._bounds = relative, filters, order, dict(bounds or {})

    def order_by(self, *fields: str) -> ArchivedDecisions:
        if tuple(fields) not in (("id",), ("-id",)):
            raise ValueError(f"an archived run's decisions are ordered by id only, not {fields}")
        return ArchivedDecisions(self._run_id, self._relative, self._filters, fields[0], self._bounds)

    def filter(self, **kwargs) -> ArchivedDecisions:
        bounds = dict(self._bounds)
        for name, value in kwargs.items():
            if name not in ("id__gt", "id__lt"):
                raise ValueError(f"an archived run's decisions filter on id__gt and id__lt only, not {name}")
            bounds[name.replace("__", "_")] = int(value)
        return ArchivedDecisions(self._run_id, self._relative, self._filters, self._order, bounds)

    def __getitem__(self, item: slice) -> list[SelectionDecision]:
        if not isinstance(item, slice) or item.step is not None:
            raise TypeError("an archived run's decisions are read a slice at a time")
        start = item.start or 0
        limit = None if item.stop is None else max(item.stop - start, 0)
        rows = archive_rows(self._relative, DECISIONS, columns=DECISIONS.fields, order=(self._order,),
                            limit=limit, offset=start, **self._filters, **self._bounds)
        return [SelectionDecision(run_id=self._run_id, **row) for row in rows]


def decisions_query(run: Run, *, prompt: str | None = None, method: str | None = None,
                    action: str | None = None, after: int | None = None, step_min: int | None = None,
                    step_max: int | None = None) -> QuerySet[SelectionDecision] | ArchivedDecisions:
    """A run's selection decisions, filtered; the caller orders and pages.

    Inside the run's partition (Postgres), ``prompt`` meets the (prompt_key, step) index;
    ``method`` and ``action`` are checked in the (step, method, action) one. ``after`` keeps steps > after;
    ``step_min`` and ``step_max`` are inclusive.
    """
    # An archived run's (telemetry_archived_at) come from its Parquet file (ArchivedDecisions):
    # the same rows, in the same pages.
    if run.telemetry_archived_at is not None:
        return ArchivedDecisions(run.pk, run.telemetry_archive_path, {
            "prompt": prompt or None, "method": method or None, "action": action or None, "step_gt": after,
            "step_min": step_min, "step_max": step_max})
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


# -- the warm-up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmupProgress:
    """A run's supervised warm-up as its heartbeats reported it, and the device time booked
    for it (the usage ledger's warm-up entry, every attempt's). ``active``: the run's current
    attempt is warming up now (its RL has not started); otherwise these are what the warm-up
    did (or reached before it was stopped)."""

    step: int
    steps: int
    active: bool
    device_seconds: float

    @property
    def share(self) -> float:
        return min(self.step / self.steps, 1.0) if self.steps else 0.0


def _warmup_of(run: Run, device_seconds: float) -> WarmupProgress | None:
    if run.warmup_steps is None or run.warmup_step is None:
        return None  # no warm-up reported (none configured, a cached one, or a verl run)
    active = (run.status in (RunStatus.STARTING, RunStatus.RUNNING) and run.warmup_attempt is not None
              and run.warmup_attempt == run.attempts_count)
    return WarmupProgress(step=run.warmup_step, steps=run.warmup_steps, active=active,
                          device_seconds=device_seconds)


def runs_warmup(runs: Sequence[Run]) -> dict[int, WarmupProgress]:
    """``WarmupProgress`` of the runs that reported a warm-up, by run id (one query for the
    device time of all of them)."""
    reported = [run for run in runs if run.warmup_steps is not None]
    if not reported:
        return {}
    booked = dict(UsageEntry.objects.filter(run_id__in=[run.pk for run in reported], kind=UsageKind.WARMUP)
                  .values_list("run_id", "device_seconds"))
    found = {run.pk: _warmup_of(run, float(booked.get(run.pk, 0.0))) for run in reported}
    return {run_id: progress for run_id, progress in found.items() if progress is not None}


def run_warmup(run: Run) -> WarmupProgress | None:
    return runs_warmup([run]).get(run.pk)


# -- why a queued run waits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitingFor:
    """Why a queued run waits, and for what, from what the control plane knows: its launch not
    yet at the broker (``broker``), queued runs launched before it (``queue``), the workers busy
    with training runs (``slot``), or nothing ahead of it (``worker``: a worker has yet to claim
    it). Runs counted are those of the same engine (they share its workers' queue). This team's
    runs are named by id; other teams' are only counted."""

    kind: str
    message: str
    training_team: tuple[int, ...] = ()
    training_other_teams: int = 0
    queued_ahead_team: tuple[int, ...] = ()
    queued_ahead_other_teams: int = 0

    @property
    def training(self) -> int:
        return len(self.training_team) + self.training_other_teams

    @property
    def queued_ahead(self) -> int:
        return len(self.queued_ahead_team) + self.queued_ahead_other_teams


def _runs(n: int, what: str = "run") -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


NAMED_AT_MOST = 5  # ids a message names before it counts the rest ("and 3 more")


def _whose(team_ids: tuple[int, ...], others: int) -> str:
    """"#12, #13 of this team; 1 of another team": ids of the run's own team, a count of the rest."""
    parts = []
    if team_ids:
        named = ", ".join(f"#{pk}" for pk in team_ids[:NAMED_AT_MOST])
        more = len(team_ids) - NAMED_AT_MOST
        parts.append(named + (f" and {more} more" if more > 0 else "") + " of this team")
    if others:
        parts.append(f"{others} of {'another team' if others == 1 else 'other teams'}")
    return "; ".join(parts)


CHECK_WORKER = "if this stays, check that a worker is running and consumes the run's queue"


def _waiting(run: Run, active: Sequence[tuple[int, int, str, str, bool]], sent: bool) -> WaitingFor:
    """``active``: (id, team id, engine, status, cancel requested) of every queued, starting or
    running run; ``sent``: whether the run's current launch message reached the broker."""
    if not sent:
        reason = run.status_reason if "not yet sent to a worker" in run.status_reason else (
            "queued, not yet sent to a worker: its launch message has not reached the broker yet; it is re-sent "
            f"every {settings.EDGEPLANE_LAUNCH_RESEND_SECONDS} s until a worker claims it")
        return WaitingFor(kind="broker", message=reason)
    same = [row for row in active if row[2] == run.engine and row[0] != run.pk]
    training = sorted(row for row in same if row[3] in (RunStatus.STARTING, RunStatus.RUNNING))
    ahead = sorted(row for row in same if row[3] == RunStatus.QUEUED and not row[4] and row[0] < run.pk)
    training_team = tuple(row[0] for row in training if row[1] == run.team_id)
    ahead_team = tuple(row[0] for row in ahead if row[1] == run.team_id)
    counts = {"training_team": training_team, "training_other_teams": len(training) - len(training_team),
              "queued_ahead_team": ahead_team, "queued_ahead_other_teams": len(ahead) - len(ahead_team)}
    kind_of = "" if run.engine == "local" else f"{run.engine} "
    if training:
        verb = "is" if len(training) == 1 else "are"
        busy = (f"{_runs(len(training), f'{kind_of}run')} {verb} training now "
                f"({_whose(training_team, counts['training_other_teams'])})")
    else:
        busy = f"no {kind_of}run is training now"
    if ahead:
        words = _runs(len(ahead), f"queued {kind_of}run")
        tail = busy if training else f"{busy}: {CHECK_WORKER}"
        return WaitingFor(kind="queue", message=(
            f"queued: waiting behind {words} launched before it "
            f"({_whose(ahead_team, counts['queued_ahead_other_teams'])}); {tail}"), **counts)
    if training:
        return WaitingFor(kind="slot", message=f"queued: waiting for a free worker slot — {busy}", **counts)
    return WaitingFor(kind="worker", message=(
        f"queued: next in line ({busy}, none queued ahead of it); waiting for a worker to claim it — "
        f"{CHECK_WORKER}"), **counts)


def runs_waiting_for(runs: Sequence[Run]) -> dict[int, WaitingFor]:
    """``WaitingFor`` of each queued run among ``runs``, by run id, in two queries whatever
    their number. A launch counts as sent once it reached the broker after the run was last
    queued: its creation, or the end of the attempt it was requeued after."""
    queued = [run for run in runs if run.status == RunStatus.QUEUED]
    if not queued:
        return {}
    active = list(Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING])
                  .values_list("pk", "team_id", "engine", "status", "cancel_requested"))
    requeued_at = dict(Attempt.objects.filter(run_id__in=[run.pk for run in queued if run.attempts_count],
                                              number=F("run__attempts_count"))
                       .values_list("run_id", "finished_at"))
    answer = {}
    for run in queued:
        since = requeued_at.get(run.pk)
        sent = run.launch_sent_at is not None and (since is None or run.launch_sent_at >= since)
        answer[run.pk] = _waiting(run, active, sent)
    return answer


def run_waiting_for(run: Run) -> WaitingFor | None:
    """Why the run waits, when it is queued (``WaitingFor``); None otherwise."""
    return runs_waiting_for([run]).get(run.pk)


@dataclass(frozen=True)
class RunDetail:
    """Everything the run page shows at once."""

    run: Run
    attempts: list[Attempt]
    totals: RunTotals
    latest_evaluation: Evaluation | None
    yardsticks: list[str]
    warmup: WarmupProgress | None = None
    waiting_for: WaitingFor | None = None


def run_detail(run: Run) -> RunDetail:
    return RunDetail(run=run, attempts=list(run.attempts.order_by("number")), totals=run_totals(run),
                     latest_evaluation=run_latest_evaluation(run), yardsticks=run_yardsticks(run),
                     warmup=run_warmup(run), waiting_for=run_waiting_for(run))
