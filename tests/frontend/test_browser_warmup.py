"""The warm-up in a real browser (Playwright, Debian's Chromium): a run that warms up shows a
warm-up bar with its steps and the device time booked so far, advancing live as the engine's
heartbeats arrive through the real sink and ingest service (ControlPlaneSink, the local
engine's path), then gives way to the RL step bar when RL starts. Screenshot:
tests/artifacts/run_warmup.png."""

from __future__ import annotations

import pytest

from controlplane.telemetry.services import ControlPlaneSink, step_ingest
from tests.frontend.conftest import KEYS
from tests.frontend.helpers import step_record
from tests.frontend.test_browser import ARTIFACTS, POLL_S, browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def shot(page, name: str) -> None:
    """The window as the user sees it (the run's head and tiles), not the whole long page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def width(page, selector: str) -> float:
    return float(page.page.eval_on_selector(selector, "el => parseFloat(el.style.width)"))


def test_a_warming_run_shows_its_warmup_bar_advancing_then_the_rl_steps(tab, acme, dataset):  # noqa: F811
    run = live_run(acme, dataset)
    sink = ControlPlaneSink(run.id, attempt=1)

    def beat(done: int, seconds: float, total: int = 4900) -> None:
        sink.heartbeat(phase="warmup", detail=f"supervised warm-up step {done}/{total}, loss 1.000",
                       device_seconds=seconds, warmup_step=done, warmup_steps=total)

    beat(500, 12.0)
    tab.sign_in("bob", "bob-pw")
    # the runs list: the progress column says the run warms up, and how far
    row = tab.page.locator(f"tr[data-run='{run.id}']")
    assert "warming up: 500/4,900 warm-up steps" in row.inner_text()

    tab.goto(f"/runs/{run.id}/")
    assert tab.page.locator("#warmup-block").is_visible() and not tab.page.locator("#rl-block").is_visible()
    assert tab.page.locator("#warmup-steps").inner_text() == "supervised warm-up 500 / 4,900 steps"
    assert tab.page.locator("#warmup-booked").inner_text() == "12.0 s of device time booked for the warm-up"
    first = width(tab, "#warmup-progress")
    assert first == pytest.approx(100 * 500 / 4900, abs=0.1)

    beat(1200, 18.0)  # 30 s booked in all
    tab.wait_for_js("document.querySelector('#warmup-steps').textContent === "
                    "'supervised warm-up 1,200 / 4,900 steps'", timeout_s=POLL_S + 4)
    assert tab.page.locator("#warmup-booked").inner_text() == "30.0 s of device time booked for the warm-up"
    tab.wait_for_js(f"parseFloat(document.querySelector('#warmup-progress').style.width) > {first + 10}")
    assert width(tab, "#warmup-progress") == pytest.approx(100 * 1200 / 4900, abs=0.1)
    tab.page.wait_for_timeout(500)  # the bar's width transition (.4 s) settles before the picture
    shot(tab, "run_warmup")

    beat(4900, 150.0)  # the warm-up's end: 180 s booked
    tab.wait_for_js("document.querySelector('#warmup-booked').textContent.startsWith('3.0 min')",
                    timeout_s=POLL_S + 4)
    assert tab.page.locator("#warmup-block").is_visible()  # done, but RL has not started: still its bar

    sink.run_started(config={}, model_parameters=10, dataset_size=12, resumed_from_step=None)
    step_ingest(run_id=run.id, record=step_record(0, KEYS[:4], skipped=KEYS[4:]))
    tab.wait_for_js("document.querySelector('#warmup-block').hidden === true", timeout_s=POLL_S + 4)
    assert tab.page.locator("#rl-block").is_visible()
    tab.wait_for_js("document.querySelector('#run-steps').textContent === '1 / 20 steps'")
    assert tab.page.locator("#warmup-done").inner_text() == (
        "after supervised warm-up 4,900 / 4,900 steps; 3.0 min of device time booked for the warm-up")
    shot(tab, "run_warmup_then_rl")
    tab.goto("/")
    assert "1/20" in tab.page.locator(f"tr[data-run='{run.id}']").inner_text()


def test_a_queued_runs_page_says_why_it_waits_until_a_worker_claims_it(tab, acme, globex, dataset):  # noqa: F811
    from unittest import mock

    from django.db.models.functions import Now

    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.models import Run
    from controlplane.runs.services import run_claim, run_create

    busy = live_run(acme, dataset, name="busy")
    theirs = dataset_import_builtin(team=globex, task="add", n_train=8, n_test=2, name="theirs")
    with mock.patch("controlplane.runs.services.run_enqueue"):
        other = run_create(team=globex, dataset=theirs, name="globex-secret", config={"steps": 2})
        queued = run_create(team=acme, dataset=dataset, name="queued", config={"steps": 2})
    run_claim(run_id=other.id, worker="test:2")
    Run.objects.filter(pk=queued.pk).update(launch_sent_at=Now())  # its launch reached the broker
    tab.sign_in("bob", "bob-pw")
    expected = (f"queued: waiting for a free worker slot — 2 runs are training now (#{busy.id} of this team; "
                "1 of another team)")
    assert tab.page.locator(f"tr[data-run='{queued.id}'] .waiting").inner_text() == expected
    tab.goto(f"/runs/{queued.id}/")
    assert tab.page.locator("#run-waiting").inner_text() == expected
    assert "globex-secret" not in tab.page.content()
    shot(tab, "run_queued_waiting")
    run_claim(run_id=queued.id, worker="test:3")  # a slot came free: the line goes once the page hears of it
    tab.wait_for_js("document.querySelector('#run-waiting').hidden === true", timeout_s=POLL_S + 4)
    assert tab.page.locator("#run-status").inner_text() == "starting"
