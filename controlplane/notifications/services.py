"""Notification writes: record an event once, read state, the team's webhook and its deliveries.

Hooks call one function where an event happens, inside that event's transaction:
``notification_run_ended`` (a run reached a final status), ``notification_budget_check`` (usage
was booked), ``notification_alerts_record`` (a step's alerts were stored). Each records at most
one notification per event (``Notification.dedupe_key``), so a replayed step or a retried task
records nothing new. A new notification of a team with an enabled webhook gets a delivery row,
sent by the ``edgeplane.deliver_webhook`` task after the commit: an event rolled back is never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.selectors import WARN_SHARE, BudgetStatus, budget_now
from controlplane.notifications.models import (
    DeliveryStatus,
    Kind,
    Notification,
    NotificationRead,
    Severity,
    WebhookDelivery,
    WebhookEndpoint,
    new_secret,
)
from controlplane.runs.models import FINISHED, Run, RunStatus

log = logging.getLogger(__name__)

DELIVER_TASK = "edgeplane.deliver_webhook"  # controlplane/notifications/tasks.py; routed to the control queue
PAYLOAD_VERSION = 1
USER_AGENT = "Edgeplane-Webhook/1"
RESPONSE_KEPT = 300  # characters of a receiver's answer kept in the delivery log
BACKOFF_FIRST_SECONDS = 10
BACKOFF_FACTOR = 3
BACKOFF_MAX_SECONDS = 900  # below Redis's visibility timeout: a countdown past it is delivered twice


# -- recording -----------------------------------------------------------------------------------------
def notification_record(*, team: Team | int, kind: str, title: str, body: str = "", severity: str = Severity.INFO,
                        run: Run | None = None, data: dict[str, Any] | None = None,
                        dedupe_key: str) -> Notification | None:
    """Record the event once: the new notification, or None when ``dedupe_key`` was recorded
    before (the same event reported again). Sends it to the team's webhook after the commit."""
    team_id = team if isinstance(team, int) else team.pk
    kind = Kind(kind)
    try:
        with transaction.atomic():  # a savepoint: a duplicate leaves the caller's transaction usable
            notification, created = Notification.objects.get_or_create(
                dedupe_key=dedupe_key[:200],
                defaults={"team_id": team_id, "run": run, "kind": kind, "severity": Severity(severity),
                          "title": title[:300], "body": body, "data": data or {}})
    except IntegrityError:  # a concurrent transaction recorded it between the look-up and the insert
        return None
    if not created:
        return None
    endpoint = WebhookEndpoint.objects.filter(team_id=team_id, enabled=True).first()
    if endpoint is not None:
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, notification=notification, event=kind,
                                                  payload=notification_payload(notification))
        transaction.on_commit(lambda: webhook_delivery_enqueue(delivery_id=delivery.pk))
    return notification


def _run_words(run: Run) -> str:
    return f"run #{run.pk} “{run.name}”"


RUN_END_KINDS = {
    RunStatus.SUCCEEDED: (Kind.RUN_SUCCEEDED, Severity.INFO, "finished"),
    RunStatus.FAILED: (Kind.RUN_FAILED, Severity.ERROR, "failed"),
    RunStatus.CANCELLED: (Kind.RUN_CANCELLED, Severity.INFO, "was cancelled"),
    RunStatus.BUDGET_STOPPED: (Kind.RUN_BUDGET_STOPPED, Severity.WARNING, "stopped: the compute budget ran out"),
}
DIVERGED = "training diverged"  # how workers.engines.lifecycle.RunLifecycle.diverged words its reason


def notification_run_ended(*, run_id: int) -> Notification | None:
    """The run's end, if it has one: finished, failed (or diverged: its reason says training
    diverged), cancelled, or stopped by the budget. Once per attempt's end: a resumed run that
    ends again is a new event; the same end reported twice is not."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.status not in FINISHED:
        return None
    kind, severity, verb = RUN_END_KINDS[RunStatus(run.status)]
    if kind == Kind.RUN_FAILED and DIVERGED in run.status_reason:
        kind, verb = Kind.RUN_DIVERGED, "failed: training diverged"
    ended = run.finished_at.isoformat() if run.finished_at else ""
    steps = f"{run.steps_completed} of {run.steps_planned} steps"
    return notification_record(
        team=run.team_id, run=run, kind=kind, severity=severity, title=f"Run #{run.pk} “{run.name}” {verb}",
        body=f"{run.status_reason or verb} ({steps})".strip(),
        data={"status": run.status, "reason": run.status_reason, "steps_completed": run.steps_completed,
              "steps_planned": run.steps_planned, "attempt": run.attempts_count},
        dedupe_key=f"run:{run.pk}:end:{run.attempts_count}:{ended}")


def budget_share_reached(used: float, limit: float, share: float) -> bool:
    """``used`` has reached ``share`` of ``limit``: at exactly the threshold too, whatever
    rounding the hours took (8640 s of a 3 h budget is 80%, though 0.8 * 3 is 2.4000000000000004)."""
    return used >= share * limit * (1 - 1e-9)


def notification_budget_check(*, team_id: int, status: BudgetStatus | None = None) -> Notification | None:
    """After usage was booked: the team's budget at 80% or at 100% of this period, each once a
    period. A jump past both records the 100% one only (the 80% warning would be stale).
    ``status``: the team's budget status already read after the booking (read here if not)."""
    status = status or budget_now(team_id)
    if status is None or status.limit_device_hours is None or status.period_start is None or status.period_end is None:
        return None  # no budget this period
    used, limit = status.used_device_hours, status.limit_device_hours
    if budget_share_reached(used, limit, 1.0):
        threshold, kind, severity = 100, Kind.BUDGET_EXHAUSTED, Severity.ERROR
        title = "Compute budget used up"
        what = "running runs stop at their next step and no new run starts until the budget is raised"
    elif budget_share_reached(used, limit, WARN_SHARE):
        threshold, kind, severity = int(WARN_SHARE * 100), Kind.BUDGET_WARNING, Severity.WARNING
        title = f"Compute budget at {threshold}%"
        what = "at 100% running runs stop and no new run starts"
    else:
        return None
    start, end = status.period_start, status.period_end
    period = f"{start:%-d %b %Y} to {end - timedelta(days=1):%-d %b %Y}"
    share = f"{100 * used / limit:.0f}%" if limit else "all"
    return notification_record(
        team=team_id, kind=kind, severity=severity, title=title,
        body=f"{used:.2f} of {limit:.2f} device-hours used ({share}) in the period {period}: {what}.",
        data={"threshold_percent": threshold, "used_device_hours": used, "limit_device_hours": limit,
              "period_start": start.isoformat(), "period_end": end.isoformat()},
        dedupe_key=f"budget:{team_id}:{start.isoformat()}:{threshold}")


def alert_kind(message: str) -> str:
    """What makes two alerts the same kind: the words without their figures ("short batch: 3 of
    8 groups" and "short batch: 5 of 8 groups" are one kind)."""
    return re.sub(r"\s+", " ", re.sub(r"\d+(\.\d+)?", "#", message)).strip()


def notification_alerts_record(*, run: Run, step: int, alerts: Iterable[str]) -> list[Notification]:
    """A step's alerts: the first step of the run that raised each kind of alert (``alert_kind``)
    is notified; later steps with the same kind are on the run page, not in the notifications."""
    recorded = []
    for message in dict.fromkeys(alerts):  # once each, in order
        kind = alert_kind(message)
        digest = hashlib.sha256(kind.encode()).hexdigest()[:32]
        notification = notification_record(
            team=run.team_id, run=run, kind=Kind.RUN_ALERT, severity=Severity.WARNING,
            title=f"Alert in {_run_words(run)} at step {step}", body=message,
            data={"step": step, "alert": message},
            dedupe_key=f"alert:{run.pk}:{digest}")
        if notification is not None:
            recorded.append(notification)
    return recorded


# -- read state ----------------------------------------------------------------------------------------
def notifications_mark_read(*, user, notification_ids: Iterable[int] | None = None) -> int:
    """Mark the user's visible notifications read: these ids, or every unread one (None).
    Another team's ids are ignored. Answers how many became read."""
    from controlplane.notifications.selectors import notifications_unread

    unread = notifications_unread(user)
    if notification_ids is not None:
        unread = unread.filter(pk__in=list(notification_ids))
    rows = [NotificationRead(notification_id=pk, user=user) for pk in unread.values_list("pk", flat=True)]
    NotificationRead.objects.bulk_create(rows, ignore_conflicts=True)  # a second tab marking too: no error
    return len(rows)


# -- the payload ---------------------------------------------------------------------------------------------
def notification_payload(notification: Notification) -> dict[str, Any]:
    """The JSON body a webhook receives for a notification (docs/notifications.md)."""
    run = notification.run
    return {
        "version": PAYLOAD_VERSION,
        "event": notification.kind,
        "id": notification.pk,
        "created_at": notification.created_at.isoformat(),
        "severity": notification.severity,
        "title": notification.title,
        "body": notification.body,
        "team": {"slug": notification.team.slug, "name": notification.team.name},
        "run": None if run is None else {"id": run.pk, "name": run.name, "status": run.status,
                                         "path": f"/runs/{run.pk}/"},
        "data": notification.data,
    }


def webhook_test_payload(team: Team) -> dict[str, Any]:
    return {"version": PAYLOAD_VERSION, "event": "test", "id": None, "created_at": timezone.now().isoformat(),
            "severity": Severity.INFO, "title": "Test event from Edgeplane",
            "body": "Sent from the webhook settings page to check that your endpoint receives and verifies events.",
            "team": {"slug": team.slug, "name": team.name}, "run": None, "data": {}}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Edgeplane-Signature header: HMAC-SHA256 of "<timestamp>.<body>" with the team's secret."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# -- the endpoint's address ------------------------------------------------------------------------------
class WebhookURLError(ValueError):
    """A webhook address that is refused: says why and what to give instead."""


# Cloud metadata services outside link-local (AWS IPv6, Alibaba): refused like 169.254.169.254.
METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


def address_refusal(address: str) -> str:
    """Why a webhook may not be sent to this IP address; "" when it may."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES or ip.is_link_local:
        return f"{ip} is a link-local or cloud metadata address, never a webhook receiver"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"{ip} is not an address a receiver can have"
    if ip.is_loopback:
        if settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK:
            return ""
        return (f"{ip} is this server itself (loopback); give an address other machines reach it by, "
                "or set EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK=1")
    if ip.is_private and not settings.EDGEPLANE_WEBHOOK_ALLOW_PRIVATE:
        return f"{ip} is a private address, and EDGEPLANE_WEBHOOK_ALLOW_PRIVATE is off on this server"
    return ""


def webhook_url_check(url: str) -> str:
    """The URL as stored, or WebhookURLError: http or https, a host, no user or password in it,
    and no address this server refuses (``address_refusal``) among those the host resolves to.
    A host that does not resolve now is accepted; each delivery checks the address it reaches."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookURLError(f"not a valid address: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise WebhookURLError("give an http:// or https:// address, e.g. https://hooks.example.com/edgeplane")
    if not parts.hostname:
        raise WebhookURLError("the address has no host name, e.g. https://hooks.example.com/edgeplane")
    if parts.username or parts.password:
        raise WebhookURLError("leave the user and password out of the address: verify the signature header instead")
    if len(url) > 2000:
        raise WebhookURLError("the address is longer than 2,000 characters")
    try:
        infos = socket.getaddrinfo(parts.hostname, port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        infos = []
    for info in infos:
        refusal = address_refusal(str(info[4][0]))
        if refusal:
            raise WebhookURLError(f"{parts.hostname} is refused: {refusal}")
    return url


# -- the endpoint --------------------------------------------------------------------------------------------
def webhook_set(*, team: Team, url: str, enabled: bool = True) -> tuple[WebhookEndpoint, str | None]:
    """Create or change the team's webhook. Answers the endpoint and, when it was just created,
    its secret (shown once; ``webhook_secret_regenerate`` makes a new one)."""
    url = webhook_url_check(url)
    endpoint = WebhookEndpoint.objects.filter(team=team).first()
    if endpoint is None:
        endpoint = WebhookEndpoint.objects.create(team=team, url=url, enabled=enabled)
        return endpoint, endpoint.secret
    endpoint.url, endpoint.enabled = url, enabled
    endpoint.save(update_fields=["url", "enabled", "updated_at"])
    return endpoint, None


def webhook_secret_regenerate(*, endpoint: WebhookEndpoint) -> str:
    """A new secret; the old one stops verifying at once (deliveries are signed when sent)."""
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret", "updated_at"])
    return endpoint.secret


def webhook_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


# -- delivery ------------------------------------------------------------------------------------------------
class RefusedAddress(OSError):
    """The connection reached an address webhooks may not go to (address_refusal)."""


def _guarded_connect(address, timeout=None, source_address=None, **kwargs):
    """socket.create_connection, then a check of the address actually reached: a host name that
    resolved to an allowed address when saved and to a refused one now (DNS rebinding) is stopped
    here, before anything is sent."""
    sock = socket.create_connection(address, timeout, source_address, **kwargs)
    refusal = address_refusal(sock.getpeername()[0])
    if refusal:
        sock.close()
        raise RefusedAddress(refusal)
    return sock


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the HTTP status (None: no answer), the start of the body, or the error."""

    code: int | None
    text: str
    error: str
    milliseconds: int

    @property
    def delivered(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def retryable(self) -> bool:
        """A 5xx, a 429 (the receiver asks to come back) or no answer: try again later."""
        return self.code is None or self.code >= 500 or self.code == 429

    def words(self) -> str:
        if self.code is None:
            return f"no answer: {self.error}"
        what = "delivered" if self.delivered else "refused" if not self.retryable else "failed"
        extra = " (redirects are not followed: give the final address)" if 300 <= self.code < 400 else ""
        return f"{what}: HTTP {self.code} in {self.milliseconds} ms{extra}"


def webhook_post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST once. ``timeout`` bounds the whole attempt (connect, send, answer), not each read:
    a receiver that trickles bytes is cut off too. Redirects are not followed."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    conn._create_connection = _guarded_connect  # type: ignore[attr-defined]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    started = time.monotonic()
    expired = threading.Event()

    def cut() -> None:  # the whole attempt's deadline: unblock a read that keeps getting a byte in time
        expired.set()
        if conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read(4096).decode("utf-8", "replace")[:RESPONSE_KEPT]
        ms = int(1000 * (time.monotonic() - started))
        if expired.is_set():
            return Answer(None, "", f"timed out after {timeout:g} s", ms)
        return Answer(response.status, text, "", ms)
    except RefusedAddress as exc:
        return Answer(None, "", f"refused: {exc}", int(1000 * (time.monotonic() - started)))
    except (OSError, http.client.HTTPException) as exc:
        ms = int(1000 * (time.monotonic() - started))
        if expired.is_set() or isinstance(exc, TimeoutError | socket.timeout):
            return Answer(None, "", f"timed out after {timeout:g} s", ms)
        return Answer(None, "", f"{type(exc).__name__}: {exc}"[:RESPONSE_KEPT], ms)
    finally:
        timer.cancel()
        conn.close()


def webhook_send(endpoint: WebhookEndpoint, payload: dict[str, Any], *, delivery_id: int | str) -> Answer:
    """Sign and POST ``payload`` to the endpoint once."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Edgeplane-Event": str(payload.get("event", "")), "X-Edgeplane-Delivery": str(delivery_id),
               "X-Edgeplane-Timestamp": timestamp, "X-Edgeplane-Signature": signature(endpoint.secret, timestamp, body)}
    try:
        url = webhook_url_check(endpoint.url)  # the server's rules may have changed since it was saved
    except WebhookURLError as exc:
        return Answer(None, "", f"refused: {exc}", 0)
    return webhook_post(url, body, headers, timeout=float(settings.EDGEPLANE_WEBHOOK_TIMEOUT_SECONDS))


def backoff_seconds(attempts: int) -> int:
    """Wait before the next attempt, after ``attempts`` failed ones: 10 s, 30 s, 90 s, ... at most 15 min."""
    return int(min(BACKOFF_FIRST_SECONDS * BACKOFF_FACTOR ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS))


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str
    retry_in: int | None  # seconds until the next attempt; None: no more attempts


def webhook_deliver(*, delivery_id: int) -> DeliveryOutcome:
    """One attempt of a delivery (the task calls this, then retries after ``retry_in``). A
    delivery already delivered or given up, or gone, is left alone (a redelivered message)."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
        return DeliveryOutcome(delivery.status if delivery else "gone", None)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        return _delivery_end(delivery, DeliveryStatus.FAILED, None, "not sent: the webhook was disabled")
    answer = webhook_send(endpoint, delivery.payload, delivery_id=delivery.pk)
    attempts = delivery.attempts + 1
    if answer.delivered:
        return _delivery_end(delivery, DeliveryStatus.DELIVERED, answer, "", attempts)
    error = answer.error or f"HTTP {answer.code}: {answer.text}".strip()
    if answer.retryable and attempts < settings.EDGEPLANE_WEBHOOK_ATTEMPTS:
        wait = backoff_seconds(attempts)
        _delivery_end(delivery, DeliveryStatus.RETRYING, answer, f"{error} (attempt {attempts}; next in {wait} s)",
                      attempts)
        return DeliveryOutcome(DeliveryStatus.RETRYING, wait)
    why = f"gave up after {attempts} attempts" if answer.retryable else "the receiver refused it: not retried"
    return _delivery_end(delivery, DeliveryStatus.FAILED, answer, f"{error} ({why})", attempts)


def _delivery_end(delivery: WebhookDelivery, status: str, answer: Answer | None, error: str,
                  attempts: int | None = None) -> DeliveryOutcome:
    now = timezone.now()
    fields = {"status": status, "last_error": error, "last_attempt_at": now,
              "response_code": answer.code if answer else None}
    if attempts is not None:
        fields["attempts"] = attempts
    if status == DeliveryStatus.DELIVERED:
        fields["delivered_at"] = now
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    words = answer.words() if answer else error
    event = Kind(delivery.event).label if delivery.event in Kind.values else "test event"
    WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(
        last_status=f"{event}: {words}"[:300], last_delivery_at=now)
    return DeliveryOutcome(status, None)


def webhook_test_send(*, endpoint: WebhookEndpoint) -> tuple[WebhookDelivery, Answer]:
    """Send a test event now (the settings page's button), once, and log it like any delivery."""
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event="test",
                                              payload=webhook_test_payload(endpoint.team))
    answer = webhook_send(endpoint, delivery.payload, delivery_id=delivery.pk)
    status = DeliveryStatus.DELIVERED if answer.delivered else DeliveryStatus.FAILED
    error = "" if answer.delivered else (answer.error or f"HTTP {answer.code}: {answer.text}".strip())
    _delivery_end(delivery, status, answer, error, 1)
    delivery.refresh_from_db()
    return delivery, answer


def webhook_delivery_enqueue(*, delivery_id: int, countdown: int | None = None) -> bool:
    """Send the delivery task to the broker. Never raises: this runs after the event's commit,
    and a broker that cannot be reached must not fail the step or the run's end that caused it;
    the delivery stays pending in the log (``webhook_deliveries_resend`` sends it again)."""
    from controlplane.celery import app as celery_app

    try:
        celery_app.send_task(DELIVER_TASK, args=[delivery_id], **({"countdown": countdown} if countdown else {}))
    except Exception as exc:  # noqa: BLE001 - any failure to publish
        log.warning("webhook delivery %s could not be sent to the broker: %s", delivery_id, exc)
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
            last_error=f"waiting: the task broker could not be reached ({type(exc).__name__})")
        return False
    return True


RESEND_AFTER_SECONDS = 300


def webhook_deliveries_resend() -> list[int]:
    """Beat: deliveries whose task never ran or whose retry was lost (the broker was down, or
    restarted without persistence) are sent again: pending ones stored RESEND_AFTER_SECONDS ago,
    retrying ones not attempted for that long past the longest backoff. A second message for a
    delivery already delivered finds nothing to do (``webhook_deliver``)."""
    now = timezone.now()
    due = list(WebhookDelivery.objects.filter(
        Q(status=DeliveryStatus.PENDING, created_at__lt=now - timedelta(seconds=RESEND_AFTER_SECONDS))
        | Q(status=DeliveryStatus.RETRYING,
            last_attempt_at__lt=now - timedelta(seconds=RESEND_AFTER_SECONDS + BACKOFF_MAX_SECONDS)),
        notification__isnull=False).order_by("pk").values_list("pk", flat=True)[:500])
    return [pk for pk in due if webhook_delivery_enqueue(delivery_id=pk)]

