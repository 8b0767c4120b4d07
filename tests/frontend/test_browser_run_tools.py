"""The run page's daily tools in a real browser (Playwright, Debian's Chromium), walked end to end on
one live run: the smoothing slider redraws the reward as a bold smoothed line over the faint raw one
(and the smoother's numbers are TensorBoard's debiased moving average); the worker log shows the
run's lines and gains new ones live, filtered by level; a chart's CSV downloads and parses to the
numbers drawn; a click on a bar of the decisions chart opens the audit trail of that step and
action. Screenshots: tests/artifacts/run_page_tools.png (smoothing, downloads), run_page_logs.png."""

from __future__ import annotations

import csv
import io
import logging

import pytest

from controlplane.operations.logs import log_context
from controlplane.operations.run_logs import RunLogHandler
from frontend import charts
from frontend import selectors as sel
from tests.frontend.test_browser import ARTIFACTS, POLL_S, browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def ema(values: list[float | None], weight: float) -> list[float | None]:
    """TensorBoard's smoothing, written out here to check the page's against known numbers."""
    last, n, out = 0.0, 0, []
    for v in values:
        if v is None:
            out.append(None)
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n))
    return out


def worker_lines(run, *messages: tuple[int, str]) -> None:
    """Lines logged inside the run's context through the real handler, as a worker logs them."""
    log = logging.getLogger("workers.engines.local.engine")
    handler = RunLogHandler(thread=False)
    log.addHandler(handler)
    log.setLevel(logging.INFO)  # as a worker started with --loglevel=INFO (make demo's) keeps them
    try:
        with log_context(run_id=run.id, attempt=1):
            for level, message in messages:
                log.log(level, message)
        assert handler.flush()
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)


def traces(browser_tab, chart: str) -> list[dict]:
    return browser_tab.page.evaluate(f"""() => document.getElementById('{chart}').data.map((t) => ({{
        y: t.y, width: t.line && t.line.width, opacity: t.opacity === undefined ? 1 : t.opacity,
        legend: t.showlegend !== false }}))""")


def test_smoothing_logs_downloads_and_a_bar_click_on_the_run_page(tab, acme, dataset):  # noqa: F811
    run = live_run(acme, dataset, steps=8)
    worker_lines(run, (logging.INFO, "warm-up: loaded the shipped warm start"),
                 (logging.WARNING, "step 3: every group all-correct"))
    tab.sign_in("bob", "bob-pw")
    errors: list[str] = []
    tab.page.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(f"/runs/{run.id}/")
    page = tab.page
    tab.wait_for_js("window.edgeplane && window.edgeplane.steps.step && window.edgeplane.steps.step.length === 8")

    # -- the smoother's numbers: the module's export against TensorBoard's, gaps kept, off at 0
    raw = [1.0, 2.0, None, 3.0, 10.0, -4.0]
    got = page.evaluate("async ([v, w]) => (await import('/static/frontend/smoothing.js')).smooth(v, w)", [raw, 0.6])
    assert got == pytest.approx(ema(raw, 0.6)) and got[2] is None
    assert got[:2] == pytest.approx([1.0, 1.625])  # (0.4)/(0.4) and (0.24 + 0.8)/(0.64)
    assert page.evaluate("async () => (await import('/static/frontend/smoothing.js')).smooth([1, 5], 0)") == [1, 5]

    # -- smoothing on the page: the bold line moves with the slider, the raw one stays behind it
    tab.wait_for_js("document.getElementById('chart-reward').data")
    assert page.locator("#smoothing-value").inner_text() == "off"
    plain = traces(tab, "chart-reward")
    assert len(plain) == 1
    reward = plain[0]["y"]
    page.locator("#smoothing").fill("0.6")
    tab.wait_for_js("document.getElementById('chart-reward').data.length === 2")
    faint, bold = traces(tab, "chart-reward")
    assert faint["y"] == reward and faint["opacity"] < 0.5 and not faint["legend"]
    assert bold["width"] > faint["width"] and bold["y"] == pytest.approx(ema(reward, 0.6))
    page.locator("#smoothing").fill("0.9")
    tab.wait_for_js("document.getElementById('chart-reward').dataset.smoothing === '0.9'")
    moved = traces(tab, "chart-reward")[1]["y"]
    assert moved == pytest.approx(ema(reward, 0.9)) and moved[-1] < bold["y"][-1]  # lags the rising reward more
    assert page.locator("#smoothing-value").inner_text() == "0.90"
    assert page.evaluate("localStorage.getItem('edgeplane.smoothing')") == "0.9"
    assert len(traces(tab, "chart-rollouts")) == 3  # a cumulative chart is never smoothed

    # -- the worker log: the lines kept, then new ones live, then a level filter
    tab.wait_for_js("document.querySelectorAll('#log-lines li').length === 2")
    assert "warm-up: loaded the shipped warm start" in page.locator("#log-lines").inner_text()
    worker_lines(run, (logging.INFO, "step 8: 4 mixed groups"), (logging.ERROR, "checkpoint write failed"))
    tab.wait_for_js("document.querySelectorAll('#log-lines li').length === 4", timeout_s=POLL_S + 3)
    last = page.locator("#log-lines li").last
    assert "checkpoint write failed" in last.inner_text() and "ERROR" in last.inner_text()
    assert "4 lines kept; live" in page.locator("#log-note").inner_text()
    page.select_option("#log-level", "WARNING")
    tab.wait_for_js("document.querySelectorAll('#log-lines li').length === 2")
    assert [t.split(" ")[1] for t in page.locator("#log-lines li").all_inner_texts()] == ["WARNING", "ERROR"]
    assert page.get_attribute("#log-download", "href") == f"/runs/{run.id}/logs/download/?level=WARNING"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.getElementById('worker-log').scrollIntoView({block: 'end'})")
    page.screenshot(path=str(ARTIFACTS / "run_page_logs.png"))
    page.evaluate("document.getElementById('rollout-savings').scrollIntoView()")
    page.screenshot(path=str(ARTIFACTS / "run_page_tools.png"))  # the slider, smoothed lines, downloads

    # -- a chart's data downloaded: the CSV parses to the numbers drawn
    with page.expect_download() as info:
        page.click("figure:has(#chart-reward) .downloads a[data-format=csv]")
    download = info.value
    assert download.suggested_filename == f"run-{run.id}-edge-run-steps.csv"
    with open(download.path(), encoding="utf-8") as handle:
        table = list(csv.DictReader(io.StringIO(handle.read())))
    assert [int(r["step"]) for r in table] == list(range(8))
    assert [float(r["reward_mean"]) for r in table] == pytest.approx(reward)
    assert page.locator(".downloads").count() >= 10  # every chart has one

    # -- a bar of the decisions chart opens the audit trail of that step and action
    chart = page.locator("#chart-actions")
    chart.scroll_into_view_if_needed()
    tab.wait_for_js("document.getElementById('chart-actions').data")
    first = next(iter(charts.action_counts(sel.action_count_rows(run, -1, 7))["counts"]))  # the bottom bars' trace
    bar = page.locator("#chart-actions .barlayer .trace").first.locator(".point path").nth(5)  # step 5's bottom bar
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/audit/?*")
    url = page.url
    assert "step_min=5" in url and "step_max=5" in url, url
    rows = page.locator("table.decisions tbody tr").all_inner_texts()
    assert rows and all(r.split("\t")[0].strip() == "5" for r in rows), rows
    actions = {r.split("\t")[4].strip() for r in rows}
    methods = {r.split("\t")[3].strip() for r in rows}
    assert len(actions) == 1 and len(methods) == 1, rows
    assert (methods.pop(), actions.pop()) == tuple(first.split("."))
    assert page.locator("select[name=action]").input_value() == first.split(".")[1]  # the filters show it
    assert errors == []
