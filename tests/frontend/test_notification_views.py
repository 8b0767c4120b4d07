"""The notifications pages through Django's test client: the header badge on every page, the
list and its read state, the badge's JSON, and the team's webhook settings (admins only)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from controlplane.notifications.models import Notification, WebhookEndpoint
from controlplane.runs.models import RunStatus
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import run_finished_ingest
from tests.controlplane.webhook_receiver import Receiver
from tests.frontend.helpers import CONFIG

pytestmark = pytest.mark.django_db


def ended(team, dataset, name: str, status: str = RunStatus.SUCCEEDED, reason: str = "trained 20 steps"):
    run = run_create(team=team, dataset=dataset, name=name, config=dict(CONFIG))
    run_claim(run_id=run.id, worker="test:1")
    run_finished_ingest(run_id=run.id, status=status, reason=reason, attempt=1)
    return run


def badge(html: str) -> str | None:
    """The badge's figure, None when it is hidden."""
    match = re.search(r'<span class="notif-badge" id="notif-badge"( hidden)?>([^<]*)</span>', html)
    assert match, "no badge in the header"
    return None if match.group(1) else match.group(2)


def test_the_header_badge_counts_unread_notifications_on_every_page(bob, alice, dataset, enqueued):
    run = ended(dataset.team, dataset, "first")
    pages = ["/", f"/runs/{run.id}/", "/compare/", "/teams/acme/budget/", "/notifications/", "/runs/new/"]
    for url in pages:
        assert badge(bob.get(url).content.decode()) == "1", url
    ended(dataset.team, dataset, "second", RunStatus.FAILED, "training diverged after 3 completed steps: nan")
    assert bob.get("/data/notifications/unread/").json() == {"unread": 2}
    assert bob.post("/notifications/read/", {"all": "1"}).status_code == 302
    assert badge(bob.get("/").content.decode()) is None
    assert bob.get("/data/notifications/unread/").json() == {"unread": 0}
    assert alice.get("/data/notifications/unread/").json() == {"unread": 2}  # alice's state is her own


def test_the_badge_costs_one_count_query(bob, dataset, enqueued, django_assert_max_num_queries):
    for name in ("a", "b", "c"):
        ended(dataset.team, dataset, name)
    bob.get("/data/notifications/unread/")  # the session and the user are read once per request too
    with django_assert_max_num_queries(3):  # session, user, the count
        assert bob.get("/data/notifications/unread/").json() == {"unread": 3}


def test_the_page_lists_newest_first_with_kind_run_link_and_mark_read(bob, mallory, dataset, enqueued):
    first = ended(dataset.team, dataset, "first")
    second = ended(dataset.team, dataset, "second", RunStatus.FAILED,
                   "training diverged after 3 completed steps: loss is nan")
    html = bob.get("/notifications/").content.decode()
    assert html.index(f"Run #{second.id}") < html.index(f"Run #{first.id}")
    assert "training diverged" in html and "run finished" in html and f'href="/runs/{first.id}/"' in html
    assert "2 unread" in html
    note = Notification.objects.get(run=first)
    assert mallory.post("/notifications/read/", {"id": note.pk}).status_code == 302  # not hers: nothing happens
    assert f"Run #{first.id}" not in mallory.get("/notifications/").content.decode()
    assert bob.get("/data/notifications/unread/").json() == {"unread": 2}
    bob.post("/notifications/read/", {"id": note.pk})
    html = bob.get("/notifications/?unread=1").content.decode()
    assert f"Run #{second.id}" in html and f"Run #{first.id}" not in html
    assert bob.post("/notifications/read/", {"id": "x"}).status_code == 302
    assert "Nothing marked read" in bob.get("/notifications/").content.decode()


def test_marking_read_needs_a_csrf_token_and_a_signed_in_user(acme, dataset, enqueued):
    ended(acme, dataset, "first")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(get_user_model().objects.get(username="bob"))
    assert strict.post("/notifications/read/", {"all": "1"}).status_code == 403
    assert strict.get("/data/notifications/unread/").json() == {"unread": 1}
    anonymous = Client()
    for url in ("/notifications/", "/data/notifications/unread/", "/teams/acme/webhook/"):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_only_the_teams_admins_manage_its_webhook(alice, bob, vera, mallory, acme):
    assert alice.get("/teams/acme/webhook/").status_code == 200
    for member in (bob, vera):
        assert member.get("/teams/acme/webhook/").status_code == 403
        assert member.post("/teams/acme/webhook/", {"url": "http://10.0.0.1/x", "enabled": "on"}).status_code == 403
    assert mallory.get("/teams/acme/webhook/").status_code == 404
    assert mallory.post("/teams/acme/webhook/test/").status_code == 404
    assert not WebhookEndpoint.objects.exists()
    assert "Webhook" in alice.get("/notifications/").content.decode()
    assert "/teams/acme/webhook/" not in bob.get("/notifications/").content.decode()


def test_an_admin_saves_a_webhook_sees_its_secret_once_and_sends_a_test(alice, acme, settings):
    response = alice.post("/teams/acme/webhook/", {"url": "http://169.254.169.254/latest", "enabled": "on"})
    assert response.status_code == 400
    assert "Not saved" in response.content.decode() and "cloud metadata" in response.content.decode()
    settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = True
    with Receiver(codes=[200]) as receiver:
        assert alice.post("/teams/acme/webhook/", {"url": receiver.url, "enabled": "on"}).status_code == 302
        endpoint = WebhookEndpoint.objects.get(team=acme)
        assert endpoint.secret in alice.get("/teams/acme/webhook/").content.decode()
        assert endpoint.secret not in alice.get("/teams/acme/webhook/").content.decode()  # once
        assert alice.post("/teams/acme/webhook/test/").status_code == 302
        html = alice.get("/teams/acme/webhook/").content.decode()
    assert "Test event delivered:" in html and "delivered: HTTP 200" in html and "answer 200" in html
    assert len(receiver.requests) == 1 and receiver.requests[0]["headers"]["X-Edgeplane-Event"] == "test"
    assert "test event" in html  # the delivery log
    old = endpoint.secret
    alice.post("/teams/acme/webhook/secret/")
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.secret in alice.get("/teams/acme/webhook/").content.decode()
    alice.post("/teams/acme/webhook/", {"url": receiver.url})  # the box unticked: disabled
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    alice.post("/teams/acme/webhook/remove/")
    assert not WebhookEndpoint.objects.exists()
