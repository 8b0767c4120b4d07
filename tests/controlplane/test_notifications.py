"""Notifications through the real services: each kind of event is recorded once (a replayed
step, a repeated end, a retried task record nothing new), budget thresholds once a period at
exactly 80% and 100%, read state per user. Webhook deliveries against a real HTTP server on
loopback: the body and a signature verified as docs/notifications.md says, a retry on 500 then
success, a receiver that hangs or trickles cut off by the timeout, addresses refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from controlplane.budgets.models import Budget
from controlplane.budgets.services import budget_set
from controlplane.datasets.services import dataset_import_builtin
from controlplane.notifications.models import DeliveryStatus, Kind, Notification, WebhookDelivery
from controlplane.notifications.selectors import notifications_for_user, notifications_unread_count
from controlplane.notifications.services import (
    WebhookURLError,
    alert_kind,
    backoff_seconds,
    budget_share_reached,
    notification_budget_check,
    notifications_mark_read,
    webhook_deliver,
    webhook_post,
    webhook_set,
    webhook_test_send,
    webhook_url_check,
)
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.services import run_attempt_end, run_cancel, run_claim, run_create, run_lose
from controlplane.runs.verl_runs import verl_run_end
from controlplane.telemetry.services import heartbeat_ingest, run_finished_ingest, step_ingest
from tests.controlplane.webhook_receiver import Receiver
from tests.frontend.helpers import step_record
from workers.engines.lifecycle import RunLifecycle

KEYS = [f"edgeplane/add:{i}" for i in range(4)]


@pytest.fixture(autouse=True)
def _fast(fast_passwords) -> None:
    """Cheap password hashing (tests/conftest.py)."""


@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="add-notify")


def new_run(team, dataset, name: str = "nightly", steps: int = 4) -> Run:
    bob = get_user_model().objects.get(username="bob")
    return run_create(team=team, dataset=dataset, name=name, config={"steps": steps, "batch_size": 4,
                                                                     "group_size": 4}, user=bob)


def claimed(team, dataset, name: str = "nightly") -> Run:
    run = new_run(team, dataset, name)
    run_claim(run_id=run.id, worker="test:1")
    return run


def kinds(team) -> list[str]:
    return list(Notification.objects.filter(team=team).order_by("pk").values_list("kind", flat=True))


# -- each kind of run end ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "reason", "kind"), [
    (RunStatus.SUCCEEDED, "trained 4 steps", Kind.RUN_SUCCEEDED),
    (RunStatus.FAILED, "engine error at step 2: ValueError: bad", Kind.RUN_FAILED),
    # the reason as the engines word it (workers.engines.lifecycle), so the two cannot drift apart
    (RunStatus.FAILED, RunLifecycle.diverged(2, FloatingPointError("loss is nan"), None).reason, Kind.RUN_DIVERGED),
    (RunStatus.FAILED, RunLifecycle.diverged(7, FloatingPointError("grad inf"), "step-5").reason, Kind.RUN_DIVERGED),
    (RunStatus.FAILED, RunLifecycle.crashed(3, RuntimeError("CUDA out of memory")).reason, Kind.RUN_FAILED),
    (RunStatus.CANCELLED, "cancelled on request after step 1", Kind.RUN_CANCELLED),
    (RunStatus.BUDGET_STOPPED, "compute budget reached after step 3", Kind.RUN_BUDGET_STOPPED),
])
def test_a_run_end_reported_by_its_engine_is_notified_once(acme, dataset, enqueued, status, reason, kind):
    run = claimed(acme, dataset)
    run_finished_ingest(run_id=run.id, status=status, reason=reason, attempt=1)
    run_finished_ingest(run_id=run.id, status=status, reason=reason, attempt=1)  # the sink's retry
    run_finished_ingest(run_id=run.id, status=status, reason=reason)  # and without its attempt
    (note,) = Notification.objects.filter(team=acme)
    assert note.kind == kind and note.run_id == run.id
    assert f"#{run.id}" in note.title and "nightly" in note.title and reason in note.body
    assert note.severity == {Kind.RUN_SUCCEEDED: "info", Kind.RUN_CANCELLED: "info",
                             Kind.RUN_BUDGET_STOPPED: "warning"}.get(kind, "error")


def test_run_ends_decided_by_the_control_plane_are_notified(acme, dataset, enqueued, settings):
    queued = new_run(acme, dataset, "queued")
    run_cancel(run=queued)  # cancelled before it started
    crashed = claimed(acme, dataset, "crashed")
    assert run_attempt_end(run_id=crashed.id, attempt=1, status=RunStatus.FAILED, reason="OSError: disk full")
    assert not run_attempt_end(run_id=crashed.id, attempt=1, status=RunStatus.FAILED, reason="again")
    settings.EDGEPLANE_MAX_ATTEMPTS = 1
    lost = claimed(acme, dataset, "lost")
    outcome = {"requeued": [], "failed": []}
    for _ in range(2):  # the reconciler passes twice: one notification
        run_lose(run_id=lost.id, reason="heartbeat stale", outcome=outcome,
                 now=timezone.now() + dt.timedelta(hours=1))
    assert outcome["failed"] == [lost.id]
    verl = claimed(acme, dataset, "verl-job")
    attempt = Attempt.objects.get(run=verl, number=1)
    assert verl_run_end(attempt=attempt, status=RunStatus.FAILED, reason="the verl job raysubmit_1 failed")
    assert not verl_run_end(attempt=attempt, status=RunStatus.FAILED, reason="a second reconciler")
    notes = {n.run.name: n for n in Notification.objects.filter(team=acme).select_related("run")}
    assert {name: n.kind for name, n in notes.items()} == {
        "queued": Kind.RUN_CANCELLED, "crashed": Kind.RUN_FAILED, "lost": Kind.RUN_FAILED, "verl-job": Kind.RUN_FAILED}
    assert "disk full" in notes["crashed"].body and "lost 1 times" in notes["lost"].body


def test_a_run_that_ends_again_after_a_new_attempt_is_a_new_event(acme, dataset, enqueued):
    run = claimed(acme, dataset)
    run_finished_ingest(run_id=run.id, status=RunStatus.FAILED, reason="engine error at step 1: boom", attempt=1)
    # resumed (as a resume service does): queued again, claimed by attempt 2, which ends too
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, finished_at=None)
    run_claim(run_id=run.id, worker="test:2")
    run_finished_ingest(run_id=run.id, status=RunStatus.SUCCEEDED, reason="trained 4 steps", attempt=2)
    assert kinds(acme) == [Kind.RUN_FAILED, Kind.RUN_SUCCEEDED]


# -- step alerts ------------------------------------------------------------------------------------------
def alerted(step: int, *alerts: str) -> dict:
    record = step_record(step, KEYS)
    record["alerts"] = list(alerts)
    return record


def test_each_kind_of_step_alert_is_notified_once_per_run_even_when_the_step_is_replayed(acme, dataset, enqueued):
    run = claimed(acme, dataset)
    short = "short batch: 3 of 4 groups collected for the update"
    step_ingest(run_id=run.id, record=alerted(0, short))
    step_ingest(run_id=run.id, record=alerted(0, short))  # replayed after a resume
    step_ingest(run_id=run.id, record=alerted(1, "short batch: 2 of 4 groups collected for the update"))
    drawn = "pre-rollout filters kept too few prompts: 9 drawn for 2 of 4 groups; training on those"
    step_ingest(run_id=run.id, record=alerted(2, drawn, drawn))
    notes = list(Notification.objects.filter(team=acme).order_by("pk"))
    assert [(n.kind, n.body, n.data["step"]) for n in notes] == [(Kind.RUN_ALERT, short, 0), (Kind.RUN_ALERT, drawn, 2)]
    assert "at step 0" in notes[0].title and "nightly" in notes[0].title
    other = claimed(acme, dataset, "other")
    step_ingest(run_id=other.id, record=alerted(0, short))  # another run: its own notification
    assert len(kinds(acme)) == 3


def test_alert_kinds_ignore_their_figures_only():
    assert alert_kind("short batch: 3 of 8 groups") == alert_kind("short batch: 5 of 8 groups")
    assert alert_kind("stopped drawing after 4 generation rounds") != alert_kind("short batch: 3 of 8 groups")


# -- budget thresholds ------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit_hours", [1.0, 3.0, 0.7])
def test_budget_thresholds_are_notified_once_a_period_at_exactly_80_and_100_percent(acme, dataset, enqueued,
                                                                                    limit_hours):
    run = claimed(acme, dataset)
    today = timezone.now().date()
    budget_set(team=acme, period_start=today - dt.timedelta(days=3), period_end=today + dt.timedelta(days=5),
               limit_device_hours=limit_hours)
    limit_s = limit_hours * 3600
    plan = [0.5, 0.29999, 0.00001, 0.1, 0.1]  # shares of the limit: 79.999%, then exactly 80%, 90%, exactly 100%
    seen = []
    for step, share in enumerate(plan):
        step_ingest(run_id=run.id, record=step_record(step, KEYS, device_seconds=share * limit_s))
        seen.append(kinds(acme))
    assert seen[:2] == [[], []]
    assert seen[2] == seen[3] == [Kind.BUDGET_WARNING]
    assert seen[4] == [Kind.BUDGET_WARNING, Kind.BUDGET_EXHAUSTED]
    step_ingest(run_id=run.id, record=step_record(4, KEYS, device_seconds=0.1 * limit_s))  # replayed
    notification_budget_check(team_id=acme.id)
    assert kinds(acme) == [Kind.BUDGET_WARNING, Kind.BUDGET_EXHAUSTED]
    warning = Notification.objects.get(team=acme, kind=Kind.BUDGET_WARNING)
    assert warning.title == "Compute budget at 80%" and "(80%)" in warning.body
    assert warning.data["limit_device_hours"] == limit_hours
    # a new period (its own budget row): its thresholds are new events
    Budget.objects.filter(team=acme).delete()  # the old period over (periods never overlap)
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=5),
               limit_device_hours=limit_s / 3600 / 0.85)
    notification_budget_check(team_id=acme.id)
    assert kinds(acme)[-1] == Kind.BUDGET_WARNING and len(kinds(acme)) == 3


def test_a_jump_past_both_thresholds_says_used_up_only(acme, dataset, enqueued):
    run = claimed(acme, dataset)
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=1), limit_device_hours=1.0)
    step_ingest(run_id=run.id, record=step_record(0, KEYS, device_seconds=0.7 * 3600))
    step_ingest(run_id=run.id, record=step_record(1, KEYS, device_seconds=0.5 * 3600))
    assert kinds(acme) == [Kind.BUDGET_EXHAUSTED]


def test_a_warmup_that_books_usage_past_the_thresholds_is_notified_too(acme, dataset, enqueued):
    run = claimed(acme, dataset)
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=1), limit_device_hours=1.0)
    for seconds, expected in ((0.5 * 3600, []), (0.3 * 3600, [Kind.BUDGET_WARNING]),
                              (0.2 * 3600, [Kind.BUDGET_WARNING, Kind.BUDGET_EXHAUSTED])):
        heartbeat_ingest(run_id=run.id, detail="supervised warm-up", attempt=1, phase="warmup",
                         device_seconds=seconds)
        assert kinds(acme) == expected


def test_a_team_without_a_budget_is_never_warned(acme, dataset, enqueued):
    run = claimed(acme, dataset)
    step_ingest(run_id=run.id, record=step_record(0, KEYS, device_seconds=1e6))
    assert kinds(acme) == []


@pytest.mark.parametrize("limit", [0.1, 0.7, 1.0, 3.0, 7.3, 1234.5])
def test_the_threshold_is_reached_at_exactly_its_share_whatever_the_rounding(limit):
    for share in (0.8, 1.0):
        used = (share * limit * 3600) / 3600  # as the ledger sums seconds and divides
        assert budget_share_reached(used, limit, share)
        assert not budget_share_reached(used * (1 - 1e-6), limit, share)


# -- read state -------------------------------------------------------------------------------------------
def test_read_state_is_per_user_and_another_teams_notifications_are_out_of_reach(acme, globex, dataset, enqueued):
    User = get_user_model()
    alice, bob, mallory = (User.objects.get(username=u) for u in ("alice", "bob", "mallory"))
    for name in ("one", "two"):
        run = claimed(acme, dataset, name)
        run_finished_ingest(run_id=run.id, status=RunStatus.SUCCEEDED, reason="trained", attempt=1)
    theirs = dataset_import_builtin(team=globex, task="add", n_train=8, n_test=2, name="theirs")
    secret = claimed(globex, theirs, "secret")
    run_finished_ingest(run_id=secret.id, status=RunStatus.SUCCEEDED, reason="trained", attempt=1)
    first = Notification.objects.filter(team=acme).order_by("pk").first()
    assert (notifications_unread_count(alice), notifications_unread_count(bob),
            notifications_unread_count(mallory)) == (2, 2, 1)
    hidden = Notification.objects.get(team=globex)
    assert notifications_mark_read(user=alice, notification_ids=[first.pk, hidden.pk]) == 1
    assert notifications_mark_read(user=alice, notification_ids=[first.pk]) == 0
    assert (notifications_unread_count(alice), notifications_unread_count(bob),
            notifications_unread_count(mallory)) == (1, 2, 1)
    assert [n.read for n in notifications_for_user(alice)] == [False, True]  # newest first
    assert notifications_mark_read(user=bob) == 2 and notifications_unread_count(bob) == 0
    assert notifications_unread_count(mallory) == 1
    assert {n.team_id for n in notifications_for_user(mallory)} == {globex.id}


# -- the webhook: a real receiver on loopback ------------------------------------------------------------------
@pytest.fixture
def loopback(settings):
    settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = True
    settings.EDGEPLANE_WEBHOOK_TIMEOUT_SECONDS = 1
    return settings


def verify(secret: str, request: dict, tolerance_s: int = 300) -> dict:
    """The receiver's check, as docs/notifications.md gives it."""
    timestamp = request["headers"]["X-Edgeplane-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + request["body"],
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request["headers"]["X-Edgeplane-Signature"])
    assert abs(time.time() - int(timestamp)) < tolerance_s
    return json.loads(request["body"])


def finished_with_webhook(acme, dataset, url: str, django_capture_on_commit_callbacks):
    endpoint, secret = webhook_set(team=acme, url=url)
    run = claimed(acme, dataset)
    with django_capture_on_commit_callbacks() as callbacks:
        run_finished_ingest(run_id=run.id, status=RunStatus.SUCCEEDED, reason="trained 4 steps", attempt=1)
    assert len(callbacks) == 1  # the delivery's task is sent after the commit, not before
    return run, endpoint, secret, WebhookDelivery.objects.get(endpoint=endpoint)


def test_a_delivery_carries_the_event_signed_with_the_teams_secret(acme, dataset, enqueued, loopback,
                                                                 django_capture_on_commit_callbacks):
    with Receiver() as receiver:
        run, endpoint, secret, delivery = finished_with_webhook(acme, dataset, receiver.url,
                                                                django_capture_on_commit_callbacks)
        assert secret.startswith("whsec_") and delivery.status == DeliveryStatus.PENDING
        assert webhook_deliver(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED
        assert webhook_deliver(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED  # redelivered message
    (request,) = receiver.requests
    payload = verify(secret, request)
    assert request["path"] == "/hooks/edgeplane?team=acme"
    assert request["headers"]["X-Edgeplane-Event"] == "run_succeeded"
    assert request["headers"]["X-Edgeplane-Delivery"] == str(delivery.pk)
    assert payload["event"] == "run_succeeded" and payload["team"] == {"slug": "acme", "name": "Acme"}
    assert payload["run"] == {"id": run.id, "name": "nightly", "status": "succeeded", "path": f"/runs/{run.id}/"}
    assert payload["data"]["steps_completed"] == 0 and payload["title"].endswith("finished")
    with pytest.raises(AssertionError):  # a wrong secret does not verify
        verify("whsec_wrong", request)
    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 200)
    assert endpoint.last_status.startswith("run finished: delivered: HTTP 200")


def test_a_500_is_retried_with_backoff_then_delivered(acme, dataset, enqueued, loopback,
                                                     django_capture_on_commit_callbacks):
    with Receiver(codes=[500, 503, 200]) as receiver:
        _, _, secret, delivery = finished_with_webhook(acme, dataset, receiver.url, django_capture_on_commit_callbacks)
        first = webhook_deliver(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert (first.status, first.retry_in, delivery.attempts) == (DeliveryStatus.RETRYING, 10, 1)
        assert "HTTP 500: answer 500" in delivery.last_error and "next in 10 s" in delivery.last_error
        assert webhook_deliver(delivery_id=delivery.pk).retry_in == 30
        assert webhook_deliver(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200)
    bodies = {r["body"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(bodies) == 1  # the same event each time, signed afresh
    for request in receiver.requests:
        verify(secret, request)


def test_the_celery_task_retries_until_delivered(acme, dataset, enqueued, loopback,
                                                django_capture_on_commit_callbacks):
    from controlplane.notifications.tasks import deliver_webhook

    with Receiver(codes=[502, 200]) as receiver:
        _, _, _, delivery = finished_with_webhook(acme, dataset, receiver.url, django_capture_on_commit_callbacks)
        # In this process (apply): Celery runs the retry at once here; a worker waits its countdown.
        assert deliver_webhook.apply(args=[delivery.pk]).get() == "delivered"
    delivery.refresh_from_db()
    assert len(receiver.requests) == 2 and (delivery.attempts, delivery.status) == (2, "delivered")


def test_a_refusal_is_not_retried_and_attempts_end_after_the_limit(acme, dataset, enqueued, loopback,
                                                                  django_capture_on_commit_callbacks):
    loopback.EDGEPLANE_WEBHOOK_ATTEMPTS = 2
    with Receiver(codes=[404]) as receiver:
        _, endpoint, _, delivery = finished_with_webhook(acme, dataset, receiver.url,
                                                         django_capture_on_commit_callbacks)
        assert webhook_deliver(delivery_id=delivery.pk).status == DeliveryStatus.FAILED
        delivery.refresh_from_db()
        assert "HTTP 404" in delivery.last_error and "not retried" in delivery.last_error
        receiver.codes = [500]
        other = WebhookDelivery.objects.create(endpoint=endpoint, event="test", payload={"event": "test"})
        assert webhook_deliver(delivery_id=other.pk).status == DeliveryStatus.RETRYING
        assert webhook_deliver(delivery_id=other.pk).status == DeliveryStatus.FAILED
        other.refresh_from_db()
        assert "gave up after 2 attempts" in other.last_error
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 5, 9)] == [10, 30, 90, 270, 810, 900]


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_a_receiver_that_hangs_or_trickles_is_cut_off_by_the_timeout(acme, loopback, mode):
    with Receiver(codes=[mode]) as receiver:
        started = time.monotonic()
        answer = webhook_post(receiver.url, b"{}", {"Content-Type": "application/json"}, timeout=1.0)
        took = time.monotonic() - started
    assert answer.code is None and answer.error == "timed out after 1 s" and answer.retryable
    assert 0.9 <= took < 2.5


def test_the_test_button_sends_a_signed_test_event_and_logs_the_answer(acme, loopback):
    with Receiver(codes=[201]) as receiver:
        endpoint, secret = webhook_set(team=acme, url=receiver.url)
        delivery, answer = webhook_test_send(endpoint=endpoint)
    assert answer.delivered and answer.words().startswith("delivered: HTTP 201 in ")
    assert verify(secret, receiver.requests[0])["event"] == "test"
    assert (delivery.status, delivery.attempts, delivery.notification) == ("delivered", 1, None)


def test_a_disabled_webhook_gets_no_deliveries(acme, dataset, enqueued, loopback):
    webhook_set(team=acme, url="http://10.1.2.3/hook", enabled=False)
    run = claimed(acme, dataset)
    run_finished_ingest(run_id=run.id, status=RunStatus.SUCCEEDED, reason="trained", attempt=1)
    assert kinds(acme) == [Kind.RUN_SUCCEEDED] and not WebhookDelivery.objects.exists()


def test_an_event_rolled_back_is_neither_recorded_nor_sent(acme, dataset, enqueued,
                                                         django_capture_on_commit_callbacks):
    webhook_set(team=acme, url="http://10.1.2.3/hook")
    run = claimed(acme, dataset)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        run_finished_ingest(run_id=run.id, status=RunStatus.SUCCEEDED, reason="trained", attempt=1)
        raise RuntimeError("the end's transaction fails")
    assert callbacks == [] and not Notification.objects.exists() and not WebhookDelivery.objects.exists()


# -- addresses ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "says"), [
    ("ftp://hooks.example.com/x", "http:// or https://"),
    ("hooks.example.com/x", "http:// or https://"),
    ("https:///path", "no host name"),
    ("https://user:pw@hooks.example.com/", "user and password"),
    ("http://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://127.0.0.1:8000/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://0.0.0.0/", "not an address"),
    ("http://224.0.0.1/", "not an address"),
    ("http://example.com:99999/", "not a valid address"),
])
def test_addresses_a_webhook_may_not_have_are_refused_with_the_reason(url, says, settings):
    settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = False
    with pytest.raises(WebhookURLError, match=says):
        webhook_url_check(url)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080/hook", "https://192.168.1.20/hook", "http://[fd12::1]/",
                                 "https://hooks.example.invalid/edgeplane"])
def test_private_addresses_and_names_are_allowed(url, settings):
    settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = False
    assert webhook_url_check(f"  {url} ") == url


def test_private_addresses_are_refused_when_the_server_says_so(settings):
    settings.EDGEPLANE_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(WebhookURLError, match="private address"):
        webhook_url_check("http://10.0.0.5/hook")


def test_the_address_reached_is_checked_when_sending_not_only_when_saved(acme, settings):
    with Receiver() as receiver:
        settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = True
        endpoint, _ = webhook_set(team=acme, url=receiver.url)
        settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = False  # as if the name now resolved to this server
        _, answer = webhook_test_send(endpoint=endpoint)
        direct = webhook_post(receiver.url, b"{}", {}, timeout=1.0)  # past the saved check: the socket's own
    assert answer.error.startswith("refused:") and "loopback" in direct.error
    assert receiver.requests == []
