"""Notifications in a real browser (Playwright, Debian's Chromium): a run that finishes through
the real services shows as 1 on the header's badge, the notifications page lists it, marking it
read clears the badge; a second run's end reaches the open page's badge by its poll; an admin
configures the team's webhook and sends a test event to a real receiver, and sees its answer.
Screenshots: tests/artifacts/notifications.png, tests/artifacts/notifications_webhook.png."""

from __future__ import annotations

import pytest

from controlplane.runs.models import RunStatus
from controlplane.telemetry.services import run_finished_ingest
from tests.controlplane.webhook_receiver import Receiver
from tests.frontend.test_browser import browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_finished_run_is_notified_read_and_sent_to_the_teams_webhook(tab, acme, dataset, settings):  # noqa: F811
    settings.EDGEPLANE_NOTIFICATIONS_POLL_SECONDS = 1
    settings.EDGEPLANE_WEBHOOK_ALLOW_LOOPBACK = True  # the receiver below listens on this machine
    run = live_run(acme, dataset, name="nightly-math", steps=2)
    run_finished_ingest(run_id=run.id, status=RunStatus.SUCCEEDED, reason="trained 20 steps", attempt=1)

    tab.sign_in("alice", "alice-pw")
    badge = tab.page.locator("#notif-badge")
    assert badge.is_visible() and badge.inner_text() == "1"
    tab.page.click("#notif-link")
    tab.page.wait_for_url("**/notifications/")
    item = tab.page.locator("li.notif[data-notification]").first
    assert "run finished" in item.inner_text() and f"Run #{run.id} “nightly-math” finished" in item.inner_text()
    assert item.locator(f"a[href='/runs/{run.id}/']").count() == 1
    tab.shot("notifications")

    item.locator("button.mark-read").click()
    tab.page.wait_for_load_state()
    assert not tab.page.locator("#notif-badge").is_visible()
    assert "all read" in tab.page.locator("h1").inner_text()

    # another run ends while the page is open: the badge hears of it by its poll, without a reload
    other = live_run(acme, dataset, name="diverging", steps=1)
    run_finished_ingest(run_id=other.id, status=RunStatus.FAILED, attempt=1,
                        reason="training diverged after 1 completed steps: loss is nan")
    tab.wait_for_js("document.querySelector('#notif-badge').textContent === '1' && "
                    "!document.querySelector('#notif-badge').hidden", timeout_s=6)

    with Receiver(codes=[200]) as receiver:
        tab.page.click("a:has-text('Webhook')")
        tab.page.wait_for_url("**/teams/acme/webhook/")
        tab.page.fill("#webhook-url", receiver.url)
        tab.page.click("#webhook-save")
        secret = tab.page.locator("#webhook-secret").inner_text()
        assert secret.startswith("whsec_")
        tab.page.click("#webhook-test")
        answer = tab.page.locator("#webhook-test-answer")
        assert answer.inner_text().startswith("Test event delivered: delivered: HTTP 200 in ")
    assert [r["headers"]["X-Edgeplane-Event"] for r in receiver.requests] == ["test"]
    assert "delivered" in tab.page.locator("#webhook-deliveries").inner_text()
    assert not tab.page.locator("#webhook-secret").count()  # shown once, gone after the next page
    tab.shot("notifications_webhook")
