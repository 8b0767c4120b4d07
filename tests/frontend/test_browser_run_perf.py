"""The run page of a long run in a real browser (Playwright, Debian's Chromium): the run is
filled in Postgres as bench/dashboard_latency.py fills it, smaller (1,500 steps, wider than any
chart). The first screen's charts come downsampled in one request each; every chart below the
fold is drawn once scrolled into view; zooming fetches the window at full resolution; a new
step still arrives through the cursor poll; the heat map shows prompt keys (the most active,
the next 50, the most changed, a search) and a row opens its prompt. No console error.
Screenshot: tests/artifacts/run_heatmap_prompts.png."""

from __future__ import annotations

import argparse

import pytest
from django.db import connection

from controlplane.telemetry.services import step_ingest
from tests.frontend.helpers import step_record
from tests.frontend.test_browser import ARTIFACTS, POLL_S, browser, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STEPS, PROMPTS = 1500, 400
DRAWN = "!!document.querySelector('#{} .main-svg')"


def test_a_long_run_draws_every_chart_once_scrolled_and_its_heat_map_shows_prompts(tab):  # noqa: F811
    if connection.vendor != "postgresql":
        pytest.skip("the run is filled with Postgres generate_series, as the bench fills it")
    from bench.dashboard_latency import fill

    user, run = fill(argparse.Namespace(steps=STEPS, batch=8, decisions=STEPS * 24, prompts=PROMPTS))
    errors: list[str] = []
    tab.page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.page.on("pageerror", lambda e: errors.append(str(e)))
    tab.sign_in(user.username, "bench")
    tab.goto(f"/runs/{run.id}/")
    page = tab.page

    # the first screen: every step in one request, cut to the chart's width, the last step kept
    tab.wait_for_js(DRAWN.format("chart-rollouts"))
    tab.wait_for_js(f"window.edgeplane.steps.step.at(-1) === {STEPS - 1}")
    sent = page.evaluate("window.edgeplane.steps.step.length")
    assert 100 < sent < STEPS, sent
    assert page.get_attribute("#chart-rollouts", "data-points") == str(3 * sent)

    # below the fold: drawn once scrolled into view
    charts = page.evaluate("[...document.querySelectorAll('.chart[id]')].map((el) => el.id)")
    assert {"chart-heatmap", "chart-actions", "chart-edge", "chart-hora-allocation"} <= set(charts)
    for chart in charts:
        page.locator(f"#{chart}").scroll_into_view_if_needed()
        tab.wait_for_js(DRAWN.format(chart), timeout_s=20)

    # zoomed into 41 steps: they come at full resolution
    page.evaluate("Plotly.relayout('chart-rollouts', {'xaxis.range': [700, 740]})")
    tab.wait_for_js("window.edgeplane.steps.step.filter((s) => s >= 700 && s <= 740).length === 41")

    # a new step arrives through the cursor poll, appended after the downsampled history
    step_ingest(run_id=run.id, record=step_record(STEPS, ["bench/p:1", "bench/p:2"]))
    tab.wait_for_js(f"window.edgeplane.steps.step.at(-1) === {STEPS}", timeout_s=POLL_S + 6)

    # the heat map: prompt keys, 50 a page, the next 50 one click away, the most changed, a search
    heat = page.locator("#chart-heatmap")
    heat.scroll_into_view_if_needed()
    tab.wait_for_js("document.querySelectorAll('#chart-heatmap .ytick text').length === 50")
    keys = page.locator("#chart-heatmap .ytick text").all_text_contents()
    assert all(k.startswith("bench/p:") for k in keys) and len(set(keys)) == 50, keys
    assert page.locator("#heat-note").inner_text().startswith(f"Prompts 1–50 of {PROMPTS}, most active")
    rows = page.evaluate("window.edgeplane.heatmap.heat.rows")  # the server's ranking, as the links list it
    assert set(rows) == set(keys) and page.locator("#heat-keys a").all_text_contents() == rows
    page.click("#heat-next")
    tab.wait_for_js("document.querySelector('#heat-note').textContent.startsWith('Prompts 51–100')")
    tab.wait_for_js("document.querySelectorAll('#chart-heatmap .ytick text').length === 50 && "
                    f"![...document.querySelectorAll('#chart-heatmap .ytick text')].some((t) => t.textContent === "
                    f"{rows[0]!r})")
    page.select_option("#heat-order", "changed")
    tab.wait_for_js("document.querySelector('#heat-note').textContent.includes('most changed')")
    tab.wait_for_js("document.querySelectorAll('#chart-heatmap .ytick text').length === 50")
    page.fill("#heat-search", "p:12")
    tab.wait_for_js("document.querySelector('#heat-note').textContent.includes('contains “p:12”')")
    found = page.locator("#chart-heatmap .ytick text").all_text_contents()
    assert found and all("p:12" in k for k in found), found
    page.fill("#heat-search", "")
    tab.wait_for_js("document.querySelector('#heat-note').textContent.startsWith('Prompts 1–50 of')")
    tab.wait_for_js("document.querySelectorAll('#chart-heatmap .ytick text').length === 50")
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".heat-fig").screenshot(path=str(ARTIFACTS / "run_heatmap_prompts.png"))

    # a row opens its prompt's page
    first = page.evaluate("window.edgeplane.heatmap.heat.rows[0]")
    page.evaluate("document.getElementById('chart-heatmap').emit('plotly_click', {points: [{pointNumber: [0, 3]}]})")
    page.wait_for_url(lambda url: "/prompt/?key=" in url)
    assert page.locator("h1").inner_text() == first
    assert errors == [], errors
