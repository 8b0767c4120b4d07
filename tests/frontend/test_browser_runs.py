"""The runs list in a real browser (Playwright, Debian's Chromium), walked end to end: sort by
a column from the keyboard, search by name, filter by a tag chip, watch a queued run start and
progress without a reload as its steps arrive through the real ingest service, then relaunch a
run from its row menu. Screenshot: tests/artifacts/runs_list.png."""

from __future__ import annotations

import pytest

from controlplane.runs.models import Run
from controlplane.runs.services import run_claim, run_create, run_tags_set
from controlplane.telemetry.services import checkpoint_ingest, run_finished_ingest, run_started_ingest, step_ingest
from tests.frontend.conftest import KEYS
from tests.frontend.helpers import CONFIG, step_record
from tests.frontend.test_browser import ARTIFACTS, POLL_S, browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def names(page) -> list[str]:
    return page.page.eval_on_selector_all("table.runs tbody tr[data-run] td:nth-child(2) > a:first-child",
                                         "links => links.map(a => a.textContent)")


def test_the_runs_list_sorts_searches_filters_by_tag_updates_live_and_relaunches(tab, acme, dataset,  # noqa: F811
                                                                                 enqueued):
    bravo = live_run(acme, dataset, name="bravo", steps=4)
    alpha = live_run(acme, dataset, name="Alpha sweep", steps=2)
    run_tags_set(run=alpha, tags=["ablation", "lr-sweep"])
    run_tags_set(run=bravo, tags=["ablation"])
    queued = run_create(team=acme, dataset=dataset, name="charlie waits", config=dict(CONFIG), tags=["hive"])

    tab.sign_in("bob", "bob-pw")
    assert names(tab) == ["charlie waits", "Alpha sweep", "bravo"]  # newest first

    # sort by name from the keyboard: focus the header's link, press Enter
    tab.page.focus("th a[data-sort=name]")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_url(lambda url: url.endswith("/?sort=name"))
    assert names(tab) == ["Alpha sweep", "bravo", "charlie waits"]
    assert tab.page.get_attribute("th:has(a[data-sort=name])", "aria-sort") == "ascending"
    tab.page.click("th a[data-sort=name]")  # again: the other way
    tab.page.wait_for_url(lambda url: url.endswith("/?sort=-name"))
    assert names(tab) == ["charlie waits", "bravo", "Alpha sweep"]

    # search by name, any case; the sort stays
    tab.page.fill("input[name=q]", "ALPHA")
    tab.page.press("input[name=q]", "Enter")
    tab.page.wait_for_url(lambda url: "q=ALPHA" in url)
    assert "sort=-name" in tab.page.url
    assert names(tab) == ["Alpha sweep"]

    # a tag chip filters by its tag
    tab.goto("/")
    tab.page.click(f"tr[data-run='{alpha.id}'] a.chip.tag:has-text('ablation')")
    tab.page.wait_for_url(lambda url: url.endswith("/?tag=ablation"))
    assert sorted(names(tab)) == ["Alpha sweep", "bravo"]
    assert tab.page.input_value("input[name=tag]") == "ablation"

    # live: the queued run starts and trains while the page stays open (no reload)
    tab.goto("/")
    tab.page.evaluate("() => { window.stillHere = true; }")
    row = f"tr[data-run='{queued.id}']"
    assert tab.page.inner_text(f"{row} .cell-status .badge") == "queued"
    run_claim(run_id=queued.id, worker="test:1")
    run_started_ingest(run_id=queued.id, resumed_from_step=None, attempt=1)  # as the engine reports its start
    for step in range(3):
        step_ingest(run_id=queued.id, record=step_record(step, KEYS[:4], skipped=KEYS[4:]))
    tab.wait_for_js(f"document.querySelector(\"{row} .cell-progress small\").textContent === '3/20'",
                    timeout_s=POLL_S + 6)
    assert tab.page.inner_text(f"{row} .cell-status .badge") == "running"
    assert "status-running" in tab.page.get_attribute(f"{row} .cell-status .badge", "class")
    assert tab.page.inner_text(f"{row} .cell-savings") == "33.3%"
    assert "uniform GRPO" in tab.page.get_attribute(f"{row} .cell-savings", "title")
    assert tab.page.inner_text(f"{row} .cell-hours") == "0.0017"
    assert tab.page.inner_text(f"{row} .cell-elapsed").endswith(" s")  # started seconds ago
    assert tab.page.inner_text(f"{row} .cell-eta").startswith("about ")
    assert tab.page.evaluate("() => window.stillHere === true")  # the same page: nothing reloaded
    tab.page.wait_for_timeout(500)  # the bar's width transition settles before the picture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "runs_list.png"))

    # relaunch from the row menu: a new queued run with the same config, dataset and tags
    tab.page.click(f"tr[data-run='{alpha.id}'] td.row-menu summary")
    tab.page.click(f"tr[data-run='{alpha.id}'] td.row-menu button:has-text('Relaunch')")
    tab.page.wait_for_url(lambda url: "/runs/" in url)
    new = Run.objects.get(name="Alpha sweep (relaunch)")
    assert tab.page.url.endswith(f"/runs/{new.id}/")
    assert "launched with the config, dataset and tags of run" in tab.page.inner_text(".messages")
    assert new.tags == ["ablation", "lr-sweep"] and new.config == alpha.config and new.status == "queued"
    assert enqueued[-1] == new.id

    # a cancelled run that saved a checkpoint resumes from its page's head
    checkpoint_ingest(run_id=bravo.id, step=4, attempt=1)
    run_finished_ingest(run_id=bravo.id, status="cancelled", reason="cancelled on request after step 4", attempt=1)
    tab.goto(f"/runs/{bravo.id}/")
    assert tab.page.inner_text("#resume-form button") == "Resume from step 4"
    assert tab.page.get_attribute("#clone-link", "href") == f"/runs/new/?from={bravo.id}"
    tab.page.screenshot(path=str(ARTIFACTS / "run_head_resume.png"), clip={"x": 0, "y": 0, "width": 1360,
                                                                           "height": 260})
    tab.page.click("#resume-form button")
    tab.page.wait_for_selector(".messages")
    assert "queued to go on from its checkpoint at step 4 of 20" in tab.page.inner_text(".messages")
    assert tab.page.inner_text("#run-status") == "queued" and enqueued[-1] == bravo.id
