"""The remote engines' sink: run tokens scoped to one run, idempotent steps, control signals."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.budgets.models import UsageDay, UsageEntry
from controlplane.budgets.selectors import budget_status
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.services import run_cancel, run_claim
from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    RunToken,
    SelectionDecision,
    StepSummary,
)
from controlplane.telemetry.services import ControlPlaneSink, heartbeat_ingest, step_ingest
from tests.controlplane.api.helpers import budget_for, build_step_record, client_for, engine, step_record, steps_url
from workers.record import RECORD_VERSION, Control, Heartbeat, RecordError
from workers.record import StepSummary as RecordSummary


def rows_of_step(run, step: int) -> tuple[int, int, int, int]:
    return (StepSummary.objects.filter(run=run, step=step).count(),
            PromptObservation.objects.filter(run=run, step=step).count(),
            SelectionDecision.objects.filter(run=run, step=step).count(),
            UsageEntry.objects.filter(run=run, step=step).count())


@pytest.mark.django_db
def test_a_step_posted_with_the_runs_token_is_stored_and_answered_continue(running, token):
    answer = engine(token).post(steps_url(running), step_record(0, ["k0", "k1"], skipped=["k2"]), format="json")
    assert answer.status_code == 200
    assert answer.json() == {"control": "continue"}
    assert rows_of_step(running, 0) == (1, 2, 3, 1)
    running.refresh_from_db()
    assert running.status == RunStatus.RUNNING and running.steps_completed == 1
    # Entropies not measured arrive as null and are stored as NULL.
    assert PromptObservation.objects.filter(run=running, prompt_entropy__isnull=True).count() == 2


@pytest.mark.django_db
def test_a_step_record_with_an_explicit_event_is_the_same_step(running, token):
    answer = engine(token).post(steps_url(running), {"event": "step", **step_record(0, ["k0"])}, format="json")
    assert answer.json() == {"control": "continue"}
    assert rows_of_step(running, 0) == (1, 1, 1, 1)


@pytest.mark.django_db
def test_a_token_for_one_run_cannot_post_to_another_run(running, token, run_b):
    answer = engine(token).post(steps_url(run_b), step_record(0, ["k0"]), format="json")
    assert answer.status_code == 403
    assert StepSummary.objects.filter(run=run_b).count() == 0


@pytest.mark.django_db
def test_a_revoked_token_is_refused_with_401(running, token):
    assert engine(token).post(steps_url(running), step_record(0, ["k0"]), format="json").status_code == 200
    RunToken.objects.filter(key=token).update(revoked_at=running.created_at)
    answer = engine(token).post(steps_url(running), step_record(1, ["k0"]), format="json")
    assert answer.status_code == 401
    assert StepSummary.objects.filter(run=running, step=1).count() == 0


@pytest.mark.django_db
def test_an_unknown_token_and_a_users_api_token_are_refused_with_401(running, team_a):
    assert engine("not-a-token").post(steps_url(running), step_record(0, ["k0"]), format="json").status_code == 401
    alice = client_for("alice")  # an admin of the run's team, but not a run token
    assert alice.post(steps_url(running), step_record(0, ["k0"]), format="json").status_code == 401
    assert StepSummary.objects.filter(run=running).count() == 0


@pytest.mark.django_db
def test_a_replayed_step_replaces_its_rows_and_never_duplicates_them(running, token):
    client = engine(token)
    client.post(steps_url(running), step_record(0, ["k0", "k1", "k2"], skipped=["k3"]), format="json")
    client.post(steps_url(running), step_record(1, ["k0", "k3"]), format="json")
    before = rows_of_step(running, 1)
    assert before == (1, 2, 2, 1)

    # The engine resumed from a checkpoint and sends step 1 again: same rows, not twice as many.
    assert client.post(steps_url(running), step_record(1, ["k0", "k3"]), format="json").status_code == 200
    assert rows_of_step(running, 1) == before
    # A replay with different content replaces the old rows entirely.
    client.post(steps_url(running), step_record(1, ["k1"], skipped=["k0", "k3"], device_seconds=7.0), format="json")
    assert rows_of_step(running, 1) == (1, 1, 3, 1)
    assert UsageEntry.objects.get(run=running, step=1).device_seconds == 7.0
    assert rows_of_step(running, 0) == (1, 3, 4, 1)  # the other step is untouched
    assert PromptState.objects.filter(run=running).count() == 4


@pytest.mark.django_db
def test_a_requested_cancel_is_answered_cancel(running, token):
    run_cancel(run=running)
    answer = engine(token).post(steps_url(running), step_record(0, ["k0"]), format="json")
    assert answer.json() == {"control": "cancel"}


@pytest.mark.django_db
def test_an_exhausted_budget_is_answered_stop_budget(running, token, team_a):
    budget_for(team_a, limit_device_hours=0.001)  # 3.6 device-seconds
    client = engine(token)
    assert client.post(steps_url(running), step_record(0, ["k0"], device_seconds=2.0), format="json").json() == {
        "control": "continue"}
    assert client.post(steps_url(running), step_record(1, ["k0"], device_seconds=2.0), format="json").json() == {
        "control": "stop_budget"}


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_control_answer_is_the_budget_read_once_after_the_booking(running, team_a, seed):
    """Steps, replays and warm-up heartbeats in any order, with and without a budget: each answer
    is what the team's budget status says right after the call, and the usage days are summed
    once per booking (for the notifications and the answer alike), never without a budget."""
    rng = random.Random(seed)
    usage_days = UsageDay._meta.db_table

    def day_sums(queries) -> int:
        return sum(1 for q in queries if "SUM" in q["sql"] and usage_days in q["sql"])

    step, answers = 0, set()
    for call in range(40):
        if call == 10:
            budget = budget_for(team_a, limit_device_hours=rng.choice([0.01, 0.02]))  # 36 or 72 device-seconds
        if call == 30:
            budget.delete()
        seconds = rng.choice([0.0, 1.0, 5.0, 9.0])
        with CaptureQueriesContext(connection) as queries:
            if rng.random() < 0.2:
                answer = heartbeat_ingest(run_id=running.id, detail="warming up", phase=Heartbeat.WARMUP,
                                          device_seconds=seconds or 0.5)
            elif step and rng.random() < 0.3:  # a replay: its seconds replace the step's first figure
                answer = step_ingest(run_id=running.id, record=build_step_record(rng.randrange(step), ["k0"],
                                                                                 device_seconds=seconds))
            else:
                answer = step_ingest(run_id=running.id, record=build_step_record(step, ["k0"],
                                                                                 device_seconds=seconds))
                step += 1
        has_budget = 10 <= call < 30
        assert day_sums(queries) == (1 if has_budget else 0), (call, [q["sql"] for q in queries])
        expected = Control.STOP_BUDGET if budget_status(team_a).exhausted else Control.CONTINUE
        assert answer == expected, call
        answers.add(answer)
    assert answers == {Control.CONTINUE, Control.STOP_BUDGET} and step > 5  # both answers were tried


@pytest.mark.django_db
def test_the_other_events_update_the_run_and_answer_ok(running, token):
    client = engine(token)
    assert client.post(steps_url(running), {"event": "run_started", "resumed_from_step": None},
                       format="json").json() == {"ok": True}
    running.refresh_from_db()
    assert running.status == RunStatus.RUNNING and running.started_at is not None

    client.post(steps_url(running), step_record(0, ["k0"]), format="json")
    assert client.post(steps_url(running), {"event": "checkpoint", "step": 0, "path": "/ckpt/0"},
                       format="json").json() == {"ok": True}
    assert client.post(steps_url(running), {"event": "evaluation", "step": 1, "k": 4, "pass_at_1": 0.5,
                                      "pass_at_k": 0.75, "prompts": 8, "by_difficulty": {"1": 0.5}},
                       format="json").json() == {"ok": True}
    evaluation = Evaluation.objects.get(run=running)
    assert evaluation.pass_at_k == 0.75 and evaluation.rollouts_generated_total == 2

    answer = client.post(steps_url(running), {"event": "run_finished", "status": "succeeded", "reason": "done"},
                         format="json")
    assert answer.json() == {"ok": True}
    running.refresh_from_db()
    assert running.status == RunStatus.SUCCEEDED and running.last_checkpoint_step == 0
    assert Attempt.objects.get(run=running).status == RunStatus.SUCCEEDED
    # The run's end revoked its token.
    assert client.post(steps_url(running), step_record(1, ["k0"]), format="json").status_code == 401


@pytest.mark.django_db
def test_a_step_for_a_finished_run_is_a_400_with_the_services_message(running, token):
    Run.objects.filter(pk=running.pk).update(status=RunStatus.CANCELLED)
    answer = engine(token).post(steps_url(running), step_record(0, ["k0"]), format="json")
    assert answer.status_code == 400
    assert "cancelled" in answer.json()["detail"]
    assert rows_of_step(running, 0) == (0, 0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("breakage", ["no_summary", "summary_field_missing", "observation_without_bucket",
                                      "negative_step", "unknown_event", "not_an_object"])
def test_a_malformed_record_is_a_400_and_stores_nothing(running, token, breakage):
    record = step_record(0, ["k0", "k1"], version=2)
    if breakage == "no_summary":
        del record["summary"]
    elif breakage == "summary_field_missing":
        del record["summary"]["device_seconds"]
    elif breakage == "observation_without_bucket":
        del record["observations"][1]["bucket"]
    elif breakage == "negative_step":
        record["step"] = -1
    elif breakage == "unknown_event":
        record["event"] = "explode"
    else:
        record = [record]
    answer = engine(token).post(steps_url(running), record, format="json")
    assert answer.status_code == 400, answer.content
    if breakage == "summary_field_missing":
        assert answer.json()["detail"] == "bad step record: summary: lacks device_seconds"
    assert StepSummary.objects.filter(run=running).count() == 0
    assert PromptObservation.objects.filter(run=running).count() == 0
    assert SelectionDecision.objects.filter(run=running).count() == 0
    assert UsageEntry.objects.filter(run=running).count() == 0


@pytest.mark.django_db
def test_a_finish_with_an_unknown_status_is_refused(running, token):
    answer = engine(token).post(steps_url(running), {"event": "run_finished", "status": "exploded"}, format="json")
    assert answer.status_code == 400
    running.refresh_from_db()
    assert running.status == RunStatus.STARTING



@pytest.mark.django_db
def test_a_heartbeat_keeps_a_warming_run_alive_and_says_what_it_does(running, token):
    from django.utils import timezone

    Run.objects.filter(pk=running.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    answer = engine(token).post(steps_url(running), {"event": "heartbeat", "phase": "warmup",
                                               "detail": "supervised warm-up step 500/1500, loss 1.2"}, format="json")
    assert answer.status_code == 200
    running.refresh_from_db()
    assert (timezone.now() - running.heartbeat_at).total_seconds() < 60
    assert running.status_reason == "supervised warm-up step 500/1500, loss 1.2"


@pytest.mark.django_db
def test_prompt_states_follow_the_newest_step_and_count_each_visit_once(running, token):
    from controlplane.telemetry.models import PromptState

    client = engine(token)
    for step in (0, 1, 1, 0):  # step 1 replayed, then an old step 0 replayed after it
        assert client.post(steps_url(running), step_record(step, ["k0"]), format="json").status_code == 200
    state = PromptState.objects.get(run=running, prompt_key="k0")
    assert state.last_step == 1 and state.visits == 2


@pytest.mark.django_db
def test_an_engine_whose_attempt_was_replaced_can_neither_write_steps_nor_end_the_run(running, token):
    from controlplane.runs.models import Run

    Run.objects.filter(pk=running.pk).update(attempts_count=2)  # the reconciler started attempt 2
    stale = engine(token).post(steps_url(running), {**step_record(0, ["k0"]), "attempt": 1}, format="json")
    assert stale.status_code == 400 and "replaced by attempt 2" in stale.json()["detail"]
    assert stale.json()["code"] == "attempt_replaced"
    assert rows_of_step(running, 0) == (0, 0, 0, 0)
    ended = engine(token).post(steps_url(running), {"event": "run_finished", "status": "failed", "reason": "zombie",
                                              "attempt": 1}, format="json")
    assert ended.status_code == 400
    running.refresh_from_db()
    assert running.status == RunStatus.STARTING and running.finished_at is None  # untouched by the zombie
    current = engine(token).post(steps_url(running), {**step_record(0, ["k0"]), "attempt": 2}, format="json")
    assert current.status_code == 200 and rows_of_step(running, 0)[0] == 1


def engine_summary(**fields) -> dict:
    """Summary fields as an engine computes them (StepAccounting through the record's
    ``StepSummary.of``: NaN becomes None), without the step-record helper's own parts."""
    from workers.selection.accounting import StepAccounting

    base = {"step": 0, "rollouts_generated": 4, "tokens_generated": 20, "rollouts_effective": 4,
            "rollouts_trained": 4, "rollouts_uniform": 6, "groups_generated": 2, "groups_all_correct": 0,
            "groups_all_wrong": 0, "groups_trained": 2, "forward_tokens_extra": 0, "backward_tokens": 20,
            "parameters": 1000, "seconds": {"generate": 1.0, "update": 1.0}}
    summary = RecordSummary.of(StepAccounting(**{**base, **fields}))
    return {name: value for name, value in summary.to_wire().items()
            if name not in ("seconds", "metrics", "train", "warmup")}


@pytest.mark.django_db
def test_the_savings_yardsticks_of_a_step_are_stored_and_their_nans_as_null(running, token):
    client = engine(token)
    # Two mixed groups of N = 2 at a mixed rate of 0.5: dynamic sampling would roll out 8.
    measured = engine_summary(prompt_tokens_generated=16, backward_prompt_tokens=8, groups_uniform=2,
                              groups_uniform_mixed=1, mixed_rate_uniform=0.5, groups_mixed_collected=2,
                              rollouts_dynamic_sampling=8.0, backward_tokens_mixed=25)
    assert client.post(steps_url(running), step_record(0, ["k0", "k1"], extra_summary=measured),
                       format="json").status_code == 200
    # No mixed group yet: the estimates are NaN in the accounting and None (null) in the record.
    unmeasured = engine_summary(step=1, groups_uniform=2)
    assert unmeasured["mixed_rate_uniform"] is None and unmeasured["backward_savings_vs_mixed"] is None
    assert client.post(steps_url(running), step_record(1, ["k0", "k1"], extra_summary=unmeasured),
                       format="json").status_code == 200

    first, second = StepSummary.objects.filter(run=running).order_by("step")
    assert (first.prompt_tokens_generated, first.backward_prompt_tokens, first.groups_uniform,
            first.groups_uniform_mixed, first.groups_mixed_collected,
            first.backward_tokens_mixed) == (16, 8, 2, 1, 2, 25)
    assert first.mixed_rate_uniform == 0.5 and first.rollouts_dynamic_sampling == 8.0
    assert first.rollout_savings_vs_dynamic_sampling == pytest.approx(1 - 4 / 8)
    assert first.backward_savings_vs_mixed == pytest.approx(1 - 20 / 25)
    assert second.groups_uniform == 2 and second.groups_mixed_collected == 0 and second.backward_tokens_mixed == 0
    assert second.mixed_rate_uniform is None and second.rollouts_dynamic_sampling is None
    assert second.rollout_savings_vs_dynamic_sampling is None and second.backward_savings_vs_mixed is None


@pytest.mark.django_db
def test_a_step_from_an_engine_without_the_yardsticks_keeps_their_defaults(running, token):
    assert engine(token).post(steps_url(running), step_record(0, ["k0"]), format="json").status_code == 200
    row = StepSummary.objects.get(run=running, step=0)
    assert (row.groups_uniform, row.groups_mixed_collected, row.backward_tokens_mixed, row.prompt_tokens_generated) \
        == (0, 0, 0, 0)
    assert row.rollouts_dynamic_sampling is None and row.rollout_savings_vs_dynamic_sampling is None


# -- one record, two paths --------------------------------------------------------------------------
def stored_rows(run) -> tuple[list, list, list, list]:
    """What a step leaves in the database, without ids and timestamps."""
    summary = list(StepSummary.objects.filter(run=run).order_by("step").values(
        *[f.name for f in StepSummary._meta.fields if f.name not in ("id", "run", "created_at")]))
    observations = list(PromptObservation.objects.filter(run=run).order_by("step", "prompt_key").values_list(
        "step", "prompt_key", "group_size", "successes", "pass_rate", "response_entropy", "prompt_entropy", "energy",
        "response_tokens", "trained", "bucket"))
    decisions = list(SelectionDecision.objects.filter(run=run).order_by("step", "prompt_key", "reason").values_list(
        "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message"))
    states = list(PromptState.objects.filter(run=run).order_by("prompt_key").values_list(
        "prompt_key", "bucket", "pass_rate", "response_entropy", "prompt_entropy", "visits", "last_step"))
    return summary, observations, decisions, states


@pytest.mark.django_db
def test_the_in_process_sink_stores_the_same_rows_as_the_http_ingest(running, token, run_b):
    record = build_step_record(0, ["k0", "k1"], skipped=["k2"], extra_summary={"mixed_rate_uniform": float("nan")})
    assert engine(token).post(steps_url(running), record.to_wire(), format="json").status_code == 200
    run_claim(run_id=run_b.id, worker="local:1")
    assert ControlPlaneSink(run_b.id).step(record) == "continue"
    assert stored_rows(running) == stored_rows(run_b)
    assert StepSummary.objects.get(run=run_b).mixed_rate_uniform is None


@pytest.mark.django_db
def test_a_malformed_record_is_refused_the_same_way_by_http_and_in_process(running, token):
    import dataclasses

    record = build_step_record(0, ["k0", "k1"])
    wire = record.to_wire(version=2)
    wire["observations"][1]["pass_rate"] = 1.5
    answer = engine(token).post(steps_url(running), wire, format="json")
    assert answer.status_code == 400
    # in process: the record cannot be built; the service reading a mapping refuses it alike
    with pytest.raises(RecordError) as built:
        dataclasses.replace(record, observations=(record.observations[0],
                                                  dataclasses.replace(record.observations[1], pass_rate=1.5)))
    with pytest.raises(RecordError) as read:
        step_ingest(run_id=running.id, record=wire)
    expected = "observation 'k1': pass_rate must be a finite number in [0, 1], got 1.5"
    assert str(built.value) == str(read.value) == expected
    assert answer.json()["detail"] == f"bad step record: {expected}"
    assert rows_of_step(running, 0) == (0, 0, 0, 0)


@pytest.mark.django_db
def test_a_record_of_an_unknown_version_is_a_400_naming_both_versions(running, token):
    answer = engine(token).post(steps_url(running), {**step_record(0, ["k0"]), "version": RECORD_VERSION + 1},
                                format="json")
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert f"version {RECORD_VERSION + 1}" in detail and f"current {RECORD_VERSION}" in detail
    assert rows_of_step(running, 0) == (0, 0, 0, 0)


@pytest.mark.django_db
def test_an_unversioned_record_from_an_older_engine_is_still_stored(running, token):
    old = step_record(0, ["k0", "k1"], version=2)
    del old["version"]
    old["summary"]["step"] = 0
    old["summary"]["mixed_rate_uniform"] = "NaN"  # version 1 spelled NaN as a string
    old["observations"][0]["prompt_entropy"] = "NaN"
    answer = engine(token).post(steps_url(running), old, format="json")
    assert answer.status_code == 200, answer.content
    assert rows_of_step(running, 0) == (1, 2, 2, 1)
    assert StepSummary.objects.get(run=running).mixed_rate_uniform is None


def test_every_event_has_one_route_whose_record_names_it():
    from controlplane.api.serializers import EVENTS
    from controlplane.telemetry.services import EVENT_ROUTES

    assert EVENTS == tuple(EVENT_ROUTES)
    assert all(route.record.EVENT == name for name, route in EVENT_ROUTES.items())


# -- compact bodies: columns, gzip ----------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("version", [2, RECORD_VERSION])
def test_a_gzip_body_is_stored_as_its_plain_form_is(running, token, version):
    """The HTTP sink's encoding (columns, gzip over 16 KB) stores exactly the rows a plain body does."""
    import gzip
    import json

    from workers.engines.verl.http_sink import encode_event

    keys = [f"k{i}" for i in range(400)]  # large enough to be compressed
    body, headers = encode_event({"event": "step", **build_step_record(0, keys).to_wire(version)})
    assert headers.get("Content-Encoding") == "gzip" and len(body) < len(json.dumps(step_record(0, keys)))
    answer = engine(token).post(steps_url(running), body, content_type="application/json",
                                headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.content
    stored = rows_of_step(running, 0)
    plain = engine(token).post(steps_url(running), json.loads(gzip.decompress(body)), format="json")
    assert plain.status_code == 200 and rows_of_step(running, 0) == stored and stored[1] == len(keys)


@pytest.mark.django_db
def test_a_body_that_inflates_past_the_limit_is_a_413_and_bad_encodings_are_400s(running, token, settings):
    import gzip

    settings.EDGEPLANE_INGEST_MAX_BYTES = 1_000_000
    bomb = gzip.compress(b"[" + b"0," * 1_000_000 + b"0]")  # 2 MB inflated, a few KB sent
    client = engine(token)
    answer = client.post(steps_url(running), bomb, content_type="application/json",
                         headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "decompressed" in answer.json()["detail"]
    answer = client.post(steps_url(running), b"not gzip", content_type="application/json",
                         headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400 and "gzip" in answer.json()["detail"]
    answer = client.post(steps_url(running), b"{}", content_type="application/json", headers={"Content-Encoding": "br"})
    assert answer.status_code == 400 and "'br'" in answer.json()["detail"]
    assert rows_of_step(running, 0) == (0, 0, 0, 0)
