"""The New run form in a real browser (Playwright, Debian's Chromium), end to end: ticking
conflicting methods shows every problem at once, live, beside each input and in the summary;
a submitted invalid form shows every problem the server found; a run's config cloned into the
form launches the same config. Screenshots: tests/artifacts/new_run_problems.png and
new_run_clone.png."""

from __future__ import annotations

import json

import pytest

from controlplane.runs.models import Run
from tests.frontend.test_browser import ARTIFACTS, browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def summary(page) -> list[str]:
    return [" ".join(t.split()) for t in page.locator("#problems li").all_inner_texts()]


def checked_after(page_, before: str) -> str:
    """Wait for a live check newer than ``before`` to be shown; its number."""
    page_.wait_for_js(f"document.getElementById('new-run').getAttribute('data-checked') !== {json.dumps(before)} "
                    "&& document.getElementById('new-run').getAttribute('data-checked') !== null")
    return page_.page.get_attribute("#new-run", "data-checked")


def test_the_form_lists_every_problem_live_and_after_submit_and_clones_a_run(tab, acme, dataset):  # noqa: F811
    source = live_run(acme, dataset, name="source-run", config={
        "steps": 7, "batch_size": 6, "group_size": 8, "seed": 3, "max_device_hours": 2.5,
        "selectors": {"hive": {"lam": 0.7}, "hora": {"n0": 3}, "rlzvp": {"alpha": 0.2}}})
    tab.sign_in("bob", "bob-pw")
    page = tab.page
    tab.goto("/runs/new/")
    assert page.locator("#problems").is_hidden()  # a blank form has nothing to fix
    assert page.is_checked("input[name=method][value=grpo]")
    # ticking RL-ZVP next to the ticked GRPO is foretold on the RL-ZVP box itself
    assert "grpo and rlzvp both set the advantage" in page.locator("fieldset[data-method=rlzvp] .method-note")\
        .inner_text()

    # tick conflicting methods and a parameter out of range: every problem shows, live
    page.fill("#f-name", "browser-form")
    for method in ("rlzvp", "dapo", "lze"):
        page.check(f"input[name=method][value={method}]")
    page.fill("input[name='selectors.rlzvp.alpha']", "99")
    page.fill("#f-group_size", "4")
    page.check("input[name=method][value=hora]")
    page.fill("input[name='selectors.hora.n0']", "4")
    checked_after(tab, None)  # the page asked the server and shows its answer
    tab.wait_for_js("document.querySelectorAll('#problems li').length === 5")
    live = summary(page)
    for words in ("Selection methods: grpo and rlzvp both set the advantage",
                  "Selection methods: dapo drops the zero-variance groups that rlzvp draws its signal from",
                  "HORA n0: the probe (n0 = 4) must be smaller than N = 4",
                  "RL-ZVP alpha: must be <= 10, got 99",
                  "LZE backward: LZE backward selection updates only on mixed groups"):
        assert any(line.startswith(words) for line in live), (words, live)
    assert any("turn LZE's pruner on" in line for line in live)  # the pruner is off: no "keep the pruner"
    assert "5 problems to fix before launching" in page.locator("#problems h2").inner_text()
    assert "must be <= 10" in page.locator("[data-field='selectors.rlzvp.alpha'] .field-error").inner_text()
    assert "smaller than N = 4" in page.locator("[data-field='selectors.hora.n0'] .field-error").inner_text()
    assert page.locator("[data-field='selectors'] .field-error").count() == 2
    page.locator("#problems").scroll_into_view_if_needed()
    tab.shot("new_run_problems")

    # turning LZE's pruner on changes its advice, live
    page.select_option("#f-selectors\\.lze\\.prune", "true")
    tab.wait_for_js("[...document.querySelectorAll('#problems li')].some(li => "
                    "li.textContent.includes('LZE keeps its pruner'))")

    # submit it invalid: the server lists the same problems, all of them
    page.click("button:has-text('Launch run')")
    page.wait_for_load_state()
    posted = summary(page)
    assert len(posted) == 5 and any("LZE keeps its pruner" in line for line in posted), posted
    assert not Run.objects.filter(name="browser-form").exists()

    # clone a run: the form holds its config, and launching it stores the same config
    tab.goto(f"/runs/new/?from={source.id}")
    assert page.input_value("#f-name") == "source-run (copy)"
    assert page.input_value("#f-steps") == "7" and page.input_value("#f-batch_size") == "6"
    assert page.input_value("input[name='selectors.hive.lam']") == "0.7"
    assert page.input_value("#f-baseline") == "" and page.input_value("#f-dataset") == str(dataset.id)
    ticked = {m for m in ("grpo", "dapo", "greso", "hive", "hora", "rlzvp", "lze")
              if page.is_checked(f"input[name=method][value={m}]")}
    assert ticked == {"hive", "hora", "rlzvp"} and page.locator("#problems").is_hidden()
    page.click("summary:has-text('More settings')")
    assert page.input_value("#f-max_device_hours") == "2.5"
    tab.shot("new_run_clone")
    page.click("button:has-text('Launch run')")
    page.wait_for_url("**/runs/*/", wait_until="commit")  # the run page itself is tested elsewhere
    clone = Run.objects.get(name="source-run (copy)")
    assert clone.config == Run.objects.get(pk=source.pk).config
