"""The compare page in a real browser (Playwright, Debian's Chromium): two runs of different
configs, written through the real ingest service; the user picks a per-step metric, switches
the accuracy chart's x axis to FLOPs and reads the config diff. Both choices stay in the URL.
Screenshot: tests/artifacts/compare_runs.png."""

from __future__ import annotations

import pytest

from tests.frontend.test_browser import ARTIFACTS, browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SECOND = {"steps": 12, "batch_size": 4, "group_size": 4, "selectors": {"hive": {}, "hora": {"n0": 3}}}


def test_compare_a_chosen_metric_accuracy_against_flops_and_the_config_diff(tab, acme, dataset):  # noqa: F811
    first = live_run(acme, dataset, name="hive-hora", steps=8)
    second = live_run(acme, dataset, name="<b>fewer</b>", steps=5, config=SECOND)
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/compare/?run={first.id}&run={second.id}")
    tab.wait_for_js("document.querySelector('#chart-compare-metric').dataset.metric === 'reward_mean'")

    # a metric of the methods' panels, picked from the select: redrawn, named in words, kept in the URL
    tab.page.select_option("#compare-metric", "metrics.hive/stage1_kept")
    tab.wait_for_js("document.querySelector('#chart-compare-metric').dataset.metric === 'metrics.hive/stage1_kept'")
    assert "metric=metrics.hive%2Fstage1_kept" in tab.page.url
    assert tab.page.locator("#compare-metric-caption").inner_text() == "HIVE: kept by stage 1, against the step"
    legends = tab.page.locator("#chart-compare-metric .legendtext").all_text_contents()
    assert legends == [f"hive-hora #{first.id}", f"<b>fewer</b> #{second.id}"], legends  # names as written
    assert tab.page.locator("#chart-compare-metric").get_attribute("data-points") == str(8 + 5)

    # the accuracy chart against FLOPs: its axis says so, the formula opens beside it
    tab.page.select_option("#compare-axis", "flops")
    tab.wait_for_js("document.querySelector('#chart-compare-accuracy').dataset.axis === 'flops'")
    assert "x=flops" in tab.page.url
    title = tab.page.locator("#chart-compare-accuracy .g-xtitle").text_content()
    assert title == "FLOPs (cumulative estimate, before the evaluation's step)"
    xs = tab.page.evaluate("() => document.getElementById('chart-compare-accuracy').data[0].x")
    assert xs == [0, 2e9, 4e9, 6e9]  # evaluations at steps 0, 2, 4, 6; 1e9 FLOPs a step
    assert tab.page.locator("#flops-basis").evaluate("el => el.open")
    assert "2 × P × (response tokens generated" in tab.page.locator("#flops-formula").inner_text()

    # the config diff: only the settings that differ, all of them one click away
    rows = tab.page.locator("#config-diff tbody tr:visible")
    keys = [rows.nth(i).get_attribute("data-key") for i in range(rows.count())]
    assert {"steps", "selectors.hora.n0", "selectors.lze.prune", "selectors.rlzvp"} <= set(keys)
    assert "batch_size" not in keys
    n0 = tab.page.locator("#config-diff tr[data-key='selectors.hora.n0'] td").all_inner_texts()
    assert n0 == ["selectors.hora.n0", "2", "3"]
    assert tab.page.locator("#config-diff tr[data-key='selectors.rlzvp'] td").all_inner_texts()[2] == "not set"
    tab.page.check("#diff-all")
    assert tab.page.locator("#config-diff tr[data-key='batch_size']").is_visible()
    tab.page.uncheck("#diff-all")

    # a reload keeps both choices (they live in the URL)
    tab.page.reload()
    tab.wait_for_js("document.querySelector('#chart-compare-accuracy').dataset.axis === 'flops'")
    assert tab.page.locator("#compare-metric").input_value() == "metrics.hive/stage1_kept"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "compare_runs.png"), full_page=True)
