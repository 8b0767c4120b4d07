"""Savings a person can read, and clean charts, in a real browser (Playwright, Debian's Chromium):
a filter run's tiles read as percentages against their yardsticks in words, say why the figure
against uniform GRPO is negative, open their formula on a click; the charts have no Plotly
Share/Chart Studio/logo, whole-number step ticks and no SI prefixes; an empty chart says what it
will show and when; the budget page's period chart is a time series with dates. Screenshots:
tests/artifacts/run_savings.png, tests/artifacts/budget_period.png."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from controlplane.budgets.services import budget_set
from controlplane.telemetry.services import evaluation_ingest, step_ingest
from tests.frontend.conftest import KEYS
from tests.frontend.helpers import CONFIG, step_record
from tests.frontend.test_browser import ARTIFACTS, browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STEP_CHARTS = ("chart-rollouts", "chart-savings", "chart-shares", "chart-reward", "chart-seconds", "chart-actions")
TICKS = "[...document.querySelectorAll('{root} .xtick text, {root} .ytick text, {root} .y2tick text')]" \
        ".map((t) => t.textContent)"
NO_CLOUD = ("[...document.querySelectorAll('.modebar-btn')].filter((b) => "
            "/share|chart studio|cloud|plotly/i.test((b.dataset.title || '') + (b.getAttribute('data-attr') || '')"
            " + (b.getAttribute('href') || ''))).length + document.querySelectorAll('.modebar-btn--logo').length")


def ticks(page, root: str = "") -> list[str]:
    return page.page.evaluate(f"() => {TICKS.format(root=root)}")


def test_savings_read_in_words_and_charts_are_clean(tab, acme, dataset):  # noqa: F811
    # GRESO refills: 16 rollouts a step where uniform GRPO draws 8 (-100%) and dynamic sampling 32 (50% fewer)
    run = live_run(acme, dataset, name="greso-run", config={**CONFIG, "selectors": {"greso": {}}})
    for step in range(3):
        step_ingest(run_id=run.id, record=step_record(step, KEYS[:4], extra_summary={
            "rollouts_uniform": 8, "rollouts_dynamic_sampling": 32.0}))
        if step % 2 == 0:
            evaluation_ingest(run_id=run.id, record={"step": step, "k": 4, "pass_at_1": 0.2 + step / 20,
                                                     "pass_at_k": 0.4, "prompts": 4})
    fresh = live_run(acme, dataset, name="fresh-run")  # no steps yet
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/runs/{run.id}/")

    ds = tab.page.locator("[data-yardstick=dynamic_sampling]")
    uniform = tab.page.locator("[data-yardstick=uniform]")
    assert ds.locator(".label").inner_text() == "Filters (GRESO) vs dynamic sampling"
    assert ds.locator(".value").inner_text() == "50.0%"
    assert ds.locator(".sentence").inner_text() == "50.0% fewer rollouts than dynamic sampling"
    assert uniform.locator(".value").inner_text() == "-100.0%"
    assert uniform.locator(".sentence").inner_text() == "100.0% more rollouts than uniform GRPO"
    assert uniform.locator(".why").inner_text() == (
        "Why: refilled to 4 mixed groups a step: 2.0x the rollouts of uniform GRPO, 0.50x those of dynamic sampling")
    assert not ds.locator(".why").is_visible()  # a saving: no why line
    assert re.fullmatch(r"\d+\.\d% (fewer|more) device-hours than uniform GRPO would use \(0\.\d{4} h\)",
                        tab.page.locator("#tile-hours-sentence").inner_text())
    effective = tab.page.locator("[data-yardstick=effective]")
    assert "do not count" in effective.locator(".counts").text_content()  # what counts as effective
    # the formula is one click away, with the run's own numbers
    worked = ds.locator(".worked")
    assert not worked.is_visible()
    ds.locator("summary").click()
    assert worked.is_visible() and worked.inner_text() == "1 - 48 / 96 = 50.0%"
    assert "dynamic sampling (DAPO)" in ds.locator("details").inner_text()

    for chart in (*STEP_CHARTS, "chart-acc-hours"):
        tab.page.wait_for_selector(f"#{chart} .main-svg", state="attached")
    tab.wait_for_js("document.querySelector('#chart-acc-hours .xtick text') !== null")
    # Plotly's modebar: no Share, Chart Studio or cloud button, no logo
    assert tab.page.locator(".modebar").count() > 0 and tab.page.evaluate(f"() => {NO_CLOUD}") == 0
    # steps 0-2: whole-number ticks only (auto ticks would put 0.5 between them)
    for chart in STEP_CHARTS:
        steps = [t for t in tab.page.locator(f"#{chart} .xtick text").all_text_contents()]
        assert steps and all(re.fullmatch(r"\d+", t) for t in steps), (chart, steps)
    every = ticks(tab)
    assert every and not [t for t in every if "µ" in t or re.search(r"\d[munkMG]$", t)], every
    hours = tab.page.locator("#chart-acc-hours .xtick text").all_text_contents()  # 0.0006-0.0017 device-hours
    assert all(re.fullmatch(r"0(\.\d+)?", t) for t in hours), hours
    legends = tab.page.locator("#chart-rollouts .legendtext").all_text_contents()
    assert legends and not [t for t in legends if "_" in t]
    # the axis rule itself: types set, never guessed; whole steps
    shapes = tab.page.evaluate("""async () => {
        const { axisShape } = await import(document.querySelector('script[src$="run.js"]').src
                                            .replace('run.js', 'plots.js'));
        return [axisShape({}, []), axisShape({}, ['a', null]), axisShape({ integer: true }, [0, 2]),
                axisShape({ integer: true }, [0, 400]), axisShape({ type: 'date' }, []),
                axisShape({ integer: true }, [])];
    }""")
    assert shapes[0] == {"type": "linear"} and shapes[1] == {"type": "category"}
    assert shapes[2] == {"type": "linear", "tickformat": "d", "tickmode": "linear", "tick0": 0, "dtick": 1}
    assert shapes[5]["range"] == [0, 10]  # no steps yet: from step 0
    assert shapes[3] == {"type": "linear", "tickformat": "d"} and shapes[4] == {"type": "date"}
    tab.page.locator("[data-yardstick=uniform] summary").click()
    tab.page.wait_for_timeout(300)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "run_savings.png"))

    # a run with no steps: tiles and charts say what will appear, and when; no axis turns into dates
    tab.goto(f"/runs/{fresh.id}/")
    assert tab.page.locator("#tile-savings-sentence").inner_text().startswith("appears after the first step")
    tab.page.wait_for_selector("#chart-acc-rollouts .annotation-text", state="attached")
    assert tab.page.locator("#chart-acc-rollouts .annotation-text").text_content() == (
        "Held-out accuracy appears after the first evaluation, every 10 steps")
    assert tab.page.locator("#chart-rollouts .annotation-text").text_content().startswith("Rollouts generated")
    assert not [t for t in ticks(tab) if "2000" in t or "µ" in t]
    for chart in STEP_CHARTS:  # whole steps on an empty step axis too (each drawn in its own time)
        tab.page.wait_for_selector(f"#{chart} .xtick text", state="attached")
        steps = tab.page.locator(f"#{chart} .xtick text").all_text_contents()
        assert steps[0] == "0" and all(re.fullmatch(r"\d+", t) for t in steps), (chart, steps)

    # the budget page: dates on x, the limit and its 80% line, no cloud buttons
    today = timezone.now().date()
    budget_set(team=acme, period_start=today - dt.timedelta(days=3), period_end=today + dt.timedelta(days=4),
               limit_device_hours=0.004)
    tab.goto("/teams/acme/budget/")
    tab.page.wait_for_selector("#chart-budget .main-svg", state="attached")
    assert tab.page.locator("#chart-budget .legendtext").all_text_contents() == [
        "device-hours used", "uniform GRPO would have used", "limit", "80% of the limit (warning)",
        "forecast to period end"]
    dates = tab.page.locator("#chart-budget .xtick text").all_text_contents()
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    assert dates and any(m in " ".join(dates) for m in months) and "2000" not in " ".join(dates), dates
    assert not [t for t in ticks(tab, "#chart-budget") if "µ" in t or re.search(r"\d[mun]$", t)]
    assert tab.page.evaluate(f"() => {NO_CLOUD}") == 0
    tab.page.locator("#chart-budget").scroll_into_view_if_needed()
    tab.page.screenshot(path=str(ARTIFACTS / "budget_period.png"))
