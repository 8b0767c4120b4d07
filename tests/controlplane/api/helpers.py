"""Helpers shared by the API tests: an authenticated client, a budget, a step record."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.api.services import api_token_get_or_create
from controlplane.budgets.services import budget_set
from workers.record import (
    BASE_COUNTS,
    RECORD_VERSION,
    DecisionRecord,
    Observation,
    StepRecord,
    StepSummary,
    TrainStats,
    finite,
)

TINY_CONFIG = {"steps": 3, "batch_size": 4, "group_size": 2, "selectors": {"greso": {}}}


def engine(key: str) -> APIClient:
    """A client as a run's engine sees the API: its run token, nothing else."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"RunToken {key}")
    return client


def steps_url(run) -> str:
    """The ingest endpoint of ``run``."""
    return f"/api/ingest/runs/{run.id}/steps/"


def client_for(username: str) -> APIClient:
    client = APIClient()
    user = get_user_model().objects.get(username=username)
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_get_or_create(user=user)}")
    return client


def budget_for(team, limit_device_hours: float):
    today = timezone.now().date()
    return budget_set(team=team, period_start=today - dt.timedelta(days=10), period_end=today + dt.timedelta(days=20),
                      limit_device_hours=limit_device_hours)


def build_step_record(step: int, keys: list[str], *, successes: list[int] | None = None,
                      device_seconds: float = 2.0, group_size: int = 2, skipped: list[str] | None = None,
                      extra_summary: dict[str, Any] | None = None) -> StepRecord:
    """A step record as an engine builds it (workers.record.StepRecord).

    ``keys`` were rolled out (one observation each); ``skipped`` were skipped by GRESO
    before rollout (a decision, no observation). ``extra_summary`` adds or overrides summary
    fields (the savings yardsticks' counts and estimates; NaN reads as not measured).
    """
    successes = successes if successes is not None else [1] * len(keys)
    skipped = skipped or []
    generated = group_size * len(keys)
    uniform = group_size * (len(keys) + len(skipped))
    seconds = {"generate": device_seconds * 0.5, "reward": device_seconds * 0.1, "select": device_seconds * 0.1,
               "update": device_seconds * 0.3}
    summary = StepSummary(
        **{name: 0 for name in BASE_COUNTS}, rollout_savings=1.0 - generated / uniform,
        effective_share_of_generated=1.0, flops_estimate=1e9, flops_uniform_estimate=1e9 * uniform / max(generated, 1),
        device_seconds=device_seconds, seconds=seconds,
        metrics={"selection/candidates_drawn": float(len(keys) + len(skipped))},
        train=TrainStats(reward_mean=0.5, loss=0.1),
    )
    extra = {name: finite(value) if isinstance(value, float) else value
             for name, value in (extra_summary or {}).items()}
    summary = dataclasses.replace(summary, **{
        "rollouts_generated": generated, "tokens_generated": generated * 5, "rollouts_effective": generated,
        "rollouts_trained": generated, "rollouts_uniform": uniform, "groups_generated": len(keys),
        "groups_trained": len(keys), **extra})
    observations = []
    for key, wins in zip(keys, successes):
        bucket = "too_easy" if wins == group_size else "too_hard" if wins == 0 else "edge"
        observations.append(Observation(
            prompt_key=key, group_size=group_size, successes=wins, pass_rate=wins / group_size, response_entropy=0.7,
            prompt_entropy=None, energy=None, response_tokens=5 * group_size, trained=True, bucket=bucket))
    decisions = [
        DecisionRecord(step=step, prompt_key=key, layer="pre_rollout", method="greso", action="kept",
                       reason="greso.unseen", scores={}, message="kept by GRESO: never rolled out before")
        for key in keys
    ] + [
        DecisionRecord(step=step, prompt_key=key, layer="pre_rollout", method="greso", action="skipped",
                       reason="greso.easy_skipped", scores={"streak": 1.0, "keep_probability": 0.1, "draw": 0.5},
                       message="skipped by GRESO: all-correct on the last 1 visit(s); keep probability 0.100, "
                               "draw 0.500")
        for key in skipped
    ]
    return StepRecord(step=step, epoch=0, summary=summary, observations=tuple(observations),
                      decisions=tuple(decisions))


def step_record(step: int, keys: list[str], version: int = RECORD_VERSION, **kwargs: Any) -> dict[str, Any]:
    """``build_step_record``'s wire form: the body a remote engine posts (``StepRecord.to_wire``);
    ``version=2`` gives rows as lists of objects, the current version columns."""
    return build_step_record(step, keys, **kwargs).to_wire(version)
