"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
headless) against pytest-django's live server.

Every test also checks that no request left the server: requests to any other origin are
aborted and make the test fail. Each page is saved as a screenshot under tests/artifacts/
(git-ignored).

The launch test enqueues for real (nothing patched), so it needs the Redis broker that
`make test` starts (tests/services.py); the others write steps into the database through the
real ingestion service while the page is open.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.budgets.selectors import forecast_device_hours
from controlplane.budgets.services import budget_set
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import run_finished_ingest, step_ingest
from tests.frontend.conftest import KEYS, train
from tests.frontend.helpers import CONFIG, step_record
from workers.engines.config import RunConfig

playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
POLL_S = 2.0  # frontend.views.POLL_MS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def browser():
    """One Chromium for this module. Module scope: Playwright's sync API keeps an event loop
    running in this thread, which later tests (verl's asyncio reward loop) must not inherit."""
    if not shutil.which(CHROMIUM):
        message = f"needs Debian's chromium at {CHROMIUM} (make test installs it: scripts/apt-deps.sh)"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    # With that loop running, Django refuses database calls from this thread unless told
    # they are safe (they are synchronous here); only for these tests, never in subprocesses.
    with pytest.MonkeyPatch.context() as patch, playwright_api.sync_playwright() as p:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


class Page:
    """A browser tab on the live server that records every request leaving it."""

    def __init__(self, browser, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith((self.base, "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def goto(self, path: str):
        return self.page.goto(self.base + path)

    def sign_in(self, username: str, password: str) -> None:
        self.goto("/accounts/login/")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_url(self.base + "/")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def wait_for_js(self, expression: str, timeout_s: float = 15.0) -> None:
        # As a function: Playwright evaluates a bare expression string with eval() inside the page,
        # which the pages' Content-Security-Policy (no 'unsafe-eval') refuses.
        self.page.wait_for_function(f"() => ({expression})", timeout=timeout_s * 1000)


@pytest.fixture
def tab(browser, live_server):
    page = Page(browser, live_server.url)
    yield page
    page.context.close()
    assert page.outside == [], f"requests left the server: {page.outside}"


def live_run(acme, dataset, *, name: str = "edge-run", steps: int = 0, config: dict | None = None) -> Run:
    """A running run of bob's (its launch not enqueued: steps are written by the test)."""
    from unittest import mock

    bob = get_user_model().objects.get(username="bob")
    with mock.patch("controlplane.runs.services.run_enqueue"):
        run = run_create(team=acme, dataset=dataset, name=name, config=dict(config or CONFIG), user=bob)
    run_claim(run_id=run.id, worker="test:1")
    train(run, range(steps))
    return run


def require_broker() -> None:
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        message = "needs the Redis broker (make test, or tests/services.py): the launch really enqueues"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


# -- the tests ---------------------------------------------------------------------------------------------


def test_sign_in_shows_the_runs_and_sign_out_ends_the_session(tab, acme, dataset):
    live_run(acme, dataset, steps=3)
    tab.goto("/")
    assert "/accounts/login/" in tab.page.url
    tab.shot("sign_in")
    tab.sign_in("alice", "alice-pw")
    assert tab.page.locator("h1").first.inner_text().startswith("Runs")
    assert tab.page.locator("table.runs").inner_text().count("edge-run") == 1
    tab.shot("runs")
    tab.page.click("button:has-text('Sign out')")
    tab.page.wait_for_url("**/accounts/login/")
    tab.goto("/")
    assert "/accounts/login/" in tab.page.url


def test_launch_a_run_through_the_form_and_cancel_it_with_the_button(tab, acme, dataset):
    require_broker()
    tab.sign_in("bob", "bob-pw")
    tab.page.click("nav >> text=New run")
    page = tab.page
    assert page.locator("button:has-text('Launch run')").is_visible()
    page.fill("#f-name", "browser-launch")
    page.uncheck("input[name=method][value=grpo]")
    page.check("input[name=method][value=hive]")
    page.check("input[name=method][value=hora]")
    page.fill("input[name='selectors.hora.n0']", "9")
    for name, value in (("batch_size", "8"), ("group_size", "4"), ("steps", "5")):
        page.fill(f"#f-{name}", value)
    # The cost line is the launch's own forecast of the whole form (HORA's n0 is not right yet:
    # the preview prices the rest), and it follows every field: B, N, steps, the response length,
    # the engine and device.
    def shows(**fields):
        config = RunConfig.from_mapping({"batch_size": 8, "group_size": 4, "steps": 5, **fields})
        figure = f"forecast {forecast_device_hours(team=acme, config=config, dataset=dataset):.4f} device-hours"
        tab.wait_for_js(f"document.querySelector('#forecast .forecast-message').textContent"
                        f".startsWith({json.dumps(figure)})")

    shows()
    page.click("summary:has-text('More settings')")
    page.fill("#f-max_new_tokens", "64")
    shows(max_new_tokens=64)
    page.fill("#f-max_new_tokens", "8")
    page.select_option("#f-engine", "verl")
    page.select_option("#f-device", "cpu")
    shows(engine="verl", device="cpu")
    page.select_option("#f-engine", "local")
    page.select_option("#f-device", "auto")
    shows()
    page.click("button:has-text('Launch run')")
    error = page.locator("[data-field='selectors.hora.n0'] .field-error")
    assert "must be smaller than N = 4" in error.inner_text()
    tab.shot("new_run_errors")
    page.fill("input[name='selectors.hora.n0']", "2")
    tab.shot("new_run")
    page.click("button:has-text('Launch run')")
    page.wait_for_url("**/runs/*/")
    run = Run.objects.get(name="browser-launch")
    assert run.status in (RunStatus.QUEUED, RunStatus.STARTING)
    assert run.config["selectors"] == {"hive": {}, "hora": {"n0": 2}}
    assert page.locator("#run-status").inner_text() in ("queued", "starting")
    assert f"Run {run.id} launched" in page.locator(".messages").inner_text()
    tab.shot("run_queued")
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector("#run-status:has-text('cancelled')")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancel_requested
    assert page.locator("button:has-text('Cancel run')").count() == 0


def test_the_rollout_chart_gains_points_while_the_run_trains_and_stops_polling_at_the_end(tab, acme, dataset):
    run = live_run(acme, dataset, steps=3)
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/runs/{run.id}/")
    for heading in ("Rollout savings", "Learning edge", "Audit trail"):
        assert tab.page.locator(f"h2:text-is('{heading}')").count() == 1
    tab.wait_for_js("window.edgeplane && window.edgeplane.steps.step && window.edgeplane.steps.step.length === 3")
    points = int(tab.page.get_attribute("#chart-rollouts", "data-points"))
    assert points == 3 * 3  # generated, uniform, savings

    for step in (3, 4):
        step_ingest(run_id=run.id, record=step_record(step, KEYS[:4], skipped=KEYS[4:]))
    written = time.monotonic()
    tab.wait_for_js("window.edgeplane.steps.step.length === 5", timeout_s=POLL_S + 1 + 4)
    assert time.monotonic() - written <= POLL_S + 1 + 1.5, "a finished step shows within the poll interval + 1 s"
    tab.wait_for_js("document.querySelector('#chart-rollouts').dataset.points === '15'")
    assert tab.page.locator("#run-steps").inner_text().startswith("5 /")

    # Hidden tab: no polling; shown again: it catches up at once.
    tab.page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    step_ingest(run_id=run.id, record=step_record(5, KEYS[:4], skipped=KEYS[4:]))
    time.sleep(POLL_S + 1.5)
    assert tab.page.evaluate("window.edgeplane.steps.step.length") == 5
    tab.page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    tab.wait_for_js("window.edgeplane.steps.step.length === 6", timeout_s=3)

    run_finished_ingest(run_id=run.id, status="succeeded", reason="trained 6 steps")
    tab.wait_for_js("window.edgeplane.series.stopped === true", timeout_s=POLL_S + 4)
    assert tab.page.locator("#run-status").inner_text() == "succeeded"
    assert tab.page.locator("button:has-text('Cancel run')").count() == 0


def test_the_run_page_draws_every_panel(tab, acme, dataset):
    run = live_run(acme, dataset, steps=16)
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/runs/{run.id}/")
    from workers.selection.registry import REGISTRY

    # each method's panels as it declares them (workers/selection/panels.py), drawn generically
    panels = {f"chart-{m}-{p.key}": p for m in REGISTRY if m in run.config["selectors"] for p in REGISTRY[m].panels}
    assert set(panels) >= {"chart-hive-kept", "chart-hive-entropy", "chart-hora-allocation", "chart-lze-energy",
                           "chart-lze-pool", "chart-rlzvp-shaped"}
    for chart in ("chart-rollouts", "chart-savings", "chart-shares", "chart-acc-rollouts", "chart-acc-hours",
                  "chart-reward", "chart-seconds", "chart-edge", "chart-heatmap", *panels, "chart-actions"):
        tab.page.wait_for_selector(f"#{chart} .main-svg", state="attached")
    tab.wait_for_js("document.querySelectorAll('#recent tr').length === 20")
    tab.wait_for_js("document.querySelector('#chart-lze-pool').dataset.points === String(16 * 4)")
    tab.page.wait_for_timeout(500)
    for chart, panel in panels.items():
        if len(panel.series) > 1:  # one series draws no legend
            legends = tab.page.locator(f"#{chart} .legendtext").all_text_contents()
            assert legends == [s.label for s in panel.series], chart
    assert tab.page.locator("#chart-rlzvp-shaped .ytick text").last.text_content().endswith("%")  # a share
    assert tab.page.locator("#chart-shares .legendtext").all_text_contents() == [
        "effective share of generated rollouts this step", "all-correct groups (share this step)",
        "all-wrong groups (share this step)"]
    phases = tab.page.locator("#chart-seconds .legendtext").all_text_contents()
    assert phases[::-1] == ["select", "generate", "reward", "update"]  # a stack lists its top first
    assert tab.page.locator("#chart-edge .legendtext").all_text_contents()[0].startswith(("too hard", "edge",
                                                                                          "too easy"))
    tab.shot("run")
    tab.page.fill("#edge-step", "0")
    tab.page.dispatch_event("#edge-step", "change")
    tab.page.wait_for_selector("#edge-step-label:has-text('step 0')")
    tab.page.check("#edge-now")
    tab.page.wait_for_selector("#edge-step-label:has-text('now')")


def test_the_savings_tiles_name_their_yardsticks_and_follow_the_run(tab, acme, dataset):
    greso = live_run(acme, dataset, name="greso-run",
                     config={**CONFIG, "selectors": {"greso": {}}})
    grpo = live_run(acme, dataset, name="grpo-run", steps=2, config={**CONFIG, "selectors": {"grpo": {}}})
    # 16 rollouts a step where dynamic sampling would roll out 32: half saved
    for step in range(2):
        step_ingest(run_id=greso.id, record=step_record(step, KEYS[:4], skipped=KEYS[4:],
                                                        extra_summary={"rollouts_dynamic_sampling": 32.0}))
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/runs/{greso.id}/")
    tiles = tab.page.locator(".tile.yardstick")
    assert tiles.count() == 2
    uniform = tab.page.locator("[data-yardstick=uniform]")
    dynamic = tab.page.locator("[data-yardstick=dynamic_sampling]")
    assert "33.3% fewer rollouts than uniform GRPO" in uniform.inner_text() and "33.3%" in uniform.inner_text()
    assert "50.0% fewer rollouts than dynamic sampling" in dynamic.inner_text() and "50.0%" in dynamic.inner_text()
    assert dynamic.locator(".formula-text").text_content().startswith(
        "1 - rollouts generated / rollouts dynamic sampling")
    tab.wait_for_js("window.edgeplane && window.edgeplane.steps.step && window.edgeplane.steps.step.length === 2")
    tab.page.wait_for_selector("#chart-savings .main-svg", state="attached")
    legends = tab.page.locator("#chart-savings .legendtext").all_text_contents()
    assert legends == ["rollout savings vs uniform GRPO (cumulative)",
                       "rollout savings vs dynamic sampling (cumulative)"]
    tab.shot("run_yardsticks")
    # A new step moves the tiles without a reload: 48 of 80 -> 40.0%.
    step_ingest(run_id=greso.id, record=step_record(2, KEYS[:4], skipped=KEYS[4:],
                                                    extra_summary={"rollouts_dynamic_sampling": 16.0}))
    tab.page.wait_for_selector("#tile-savings-ds:text-is('40.0%')", timeout=(POLL_S + 4) * 1000)
    assert tab.page.locator("#tile-savings").inner_text() == "33.3%"
    tab.page.wait_for_selector("#tile-savings-ds-sentence:text-is('40.0% fewer rollouts than dynamic sampling')")

    tab.goto(f"/runs/{grpo.id}/")
    assert tab.page.locator(".tile.yardstick").count() == 1
    assert "fewer rollouts than uniform GRPO" in tab.page.locator("[data-yardstick=uniform]").inner_text()
    assert "vs dynamic sampling" not in tab.page.locator(".tiles").inner_text()


def test_filter_the_audit_trail_to_one_prompt_and_open_its_page(tab, acme, dataset):
    run = live_run(acme, dataset, steps=6)
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/runs/{run.id}/")
    tab.page.fill("#audit-trail input[name=prompt]", KEYS[1])
    tab.page.click("button:has-text('Open its audit trail')")
    tab.page.wait_for_url("**/audit/?prompt=*")
    rows = tab.page.locator("table.decisions tbody tr")
    assert rows.count() == 6 * 3  # HIVE, HORA and LZE each step
    assert set(tab.page.locator("table.decisions .prompt-link").all_inner_texts()) == {KEYS[1]}
    tab.shot("audit_trail")
    tab.page.select_option("select[name=action]", "allocated")
    tab.page.click("button:has-text('Filter')")
    tab.page.wait_for_url("**action=allocated*")
    assert tab.page.locator("table.decisions tbody tr").count() == 6
    tab.page.locator("table.decisions .prompt-link").first.click()
    tab.page.wait_for_url(lambda url: "/prompt/?key=" in url)
    assert tab.page.locator("h1").inner_text() == KEYS[1]
    tab.page.wait_for_selector("#chart-prompt .main-svg", state="attached")
    assert "Answer:" in tab.page.content()
    tab.shot("prompt")


def test_compare_two_runs(tab, acme, dataset):
    first = live_run(acme, dataset, name="hive-hora", steps=8)
    second = live_run(acme, dataset, name="second", steps=4)
    tab.sign_in("bob", "bob-pw")
    tab.page.check(f"input[name=run][value='{first.id}']")
    tab.page.check(f"input[name=run][value='{second.id}']")
    tab.page.click("button:has-text('Compare selected')")
    tab.page.wait_for_url("**/compare/?run=*")
    tab.page.wait_for_selector("#chart-compare-accuracy .main-svg", state="attached")
    assert tab.page.locator("#savings").inner_text().count("second") == 1
    tab.shot("compare")


def test_the_budget_page_warns_at_80_percent(tab, acme, dataset):
    live_run(acme, dataset, steps=6)  # 6 steps x 2 s = 0.0033 device-hours
    today = timezone.now().date()
    budget_set(team=acme, period_start=today - dt.timedelta(days=3), period_end=today + dt.timedelta(days=27),
               limit_device_hours=0.004)
    tab.sign_in("alice", "alice-pw")
    tab.page.click("nav >> text=Compute budget")
    tab.page.wait_for_url("**/teams/acme/budget/")
    assert "80% of the budget used" in tab.page.locator(".alert").inner_text()
    tab.page.wait_for_selector("#chart-budget .main-svg", state="attached")
    assert "edge-run" in tab.page.locator("table.grid").first.inner_text()
    tab.shot("budget")


def test_a_user_of_another_team_cannot_open_the_run(tab, acme, globex, dataset):
    run = live_run(acme, dataset, steps=2)
    tab.sign_in("mallory", "mallory-pw")
    response = tab.goto(f"/runs/{run.id}/")
    assert response.status == 404 and "edge-run" not in tab.page.content()
    assert tab.goto(f"/data/runs/{run.id}/series/").status == 404
    tab.goto("/")
    assert "edge-run" not in tab.page.content()


# -- user text is plain text in charts; the Content-Security-Policy holds on every page ---------------------

# Plotly reads pseudo-HTML (<a href>, <b>, <br>, entities) in every label and hover text: user text
# (run names, prompt keys) must show literally, never as a link or markup.
MARKUP_RUN = '<a href="https://example.com/">run</a> <b>bold</b> & co'
MARKUP_KEYS = ['<a href="javascript:alert(1)">evil</a>', '<b>bold</b> & <i>x</i>',
               '<a href="https://example.com/">link</a>', "a<br>b &lt; c"]
NO_LINK_IN_CHARTS = "document.querySelectorAll('.main-svg a').length"


def markup_run(acme, dataset, name: str = MARKUP_RUN, steps: int = 6) -> Run:
    """A run whose name and whose prompts' keys are markup."""
    from controlplane.datasets.models import Prompt

    for key, markup in zip(KEYS, MARKUP_KEYS):
        Prompt.objects.filter(dataset=dataset, key=key).update(key=markup)
    run = live_run(acme, dataset, name=name)
    train(run, range(steps), keys=MARKUP_KEYS)
    return run


def test_run_names_and_prompt_keys_are_drawn_as_plain_text(tab, acme, dataset):
    run = markup_run(acme, dataset)
    second = live_run(acme, dataset, name="<i>second</i>", steps=4)
    tab.sign_in("bob", "bob-pw")
    tab.goto(f"/runs/{run.id}/")
    for chart in ("chart-edge", "chart-heatmap", "chart-actions", "chart-rollouts"):
        tab.page.wait_for_selector(f"#{chart} .main-svg", state="attached")
    tab.wait_for_js("document.querySelectorAll('#chart-heatmap .ytick text').length >= 4")
    ticks = tab.page.locator("#chart-heatmap .ytick text").all_text_contents()
    assert set(MARKUP_KEYS) <= set(ticks), ticks
    # hover a point of the learning-edge map: its prompt key, literally
    tab.wait_for_js("document.querySelectorAll('#chart-edge .scatterlayer .point').length >= 1")
    tab.page.evaluate("Plotly.Fx.hover('chart-edge', [{curveNumber: 0, pointNumber: 0}])")
    tab.wait_for_js("document.querySelector('#chart-edge .hoverlayer').textContent.length > 0")
    hover = tab.page.locator("#chart-edge .hoverlayer").text_content()
    assert any(key in hover for key in MARKUP_KEYS), hover
    # ... and a click on it opens that prompt's page (the raw key, not its escaped form)
    tab.page.evaluate("""() => {
        const el = document.getElementById('chart-edge');
        const trace = el.data[0];
        el.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: 0, text: trace.text[0]}]});
    }""")
    tab.page.wait_for_url(lambda url: "/prompt/?key=" in url)
    assert tab.page.locator("h1").inner_text() in MARKUP_KEYS
    tab.page.go_back()
    tab.page.wait_for_selector("#chart-heatmap .main-svg", state="attached")
    assert tab.page.evaluate(NO_LINK_IN_CHARTS) == 0
    assert tab.page.locator("#chart-heatmap .ytick text b, #chart-heatmap .ytick tspan[style*=bold]").count() == 0
    tab.shot("markup_run")

    tab.goto(f"/compare/?run={run.id}&run={second.id}")
    tab.page.wait_for_selector("#chart-compare-accuracy .main-svg", state="attached")
    legends = tab.page.locator("#chart-compare-accuracy .legendtext").all_text_contents()
    assert f"{MARKUP_RUN} #{run.id} Pass@1" in legends and f"<i>second</i> #{second.id} Pass@4" in legends, legends
    legends = tab.page.locator("#chart-compare-metric .legendtext").all_text_contents()
    assert legends == [f"{MARKUP_RUN} #{run.id}", f"<i>second</i> #{second.id}"], legends
    assert tab.page.evaluate(NO_LINK_IN_CHARTS) == 0
    tab.shot("markup_compare")


CSP_LISTENER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI} ${e.sample || ''}`);
});
"""


def test_every_page_sends_a_content_security_policy_that_it_keeps(tab, acme, globex, dataset):
    from controlplane.accounts.services import membership_set

    run = live_run(acme, dataset, steps=8)
    second = live_run(acme, dataset, name="second", steps=4)
    membership_set(team=globex, username="bob", role="viewer")  # two teams: the team switcher shows
    today = timezone.now().date()
    budget_set(team=acme, period_start=today - dt.timedelta(days=3), period_end=today + dt.timedelta(days=27),
               limit_device_hours=1.0)
    console: list[str] = []
    tab.page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    tab.context.add_init_script(CSP_LISTENER)

    def visit(path: str, *ready: str) -> None:
        response = tab.goto(path)
        assert response.status == 200, (path, response.status)
        policy = response.headers.get("content-security-policy", "")
        directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
        assert directives.get("script-src") == ["'self'"], (path, policy)
        assert directives.get("default-src") == ["'self'"] and directives.get("frame-ancestors") == ["'none'"]
        for selector in ready:
            tab.page.wait_for_selector(selector, state="attached")
        tab.page.wait_for_timeout(300)
        violations = tab.page.evaluate("window.__csp")
        assert violations == [], (path, violations)

    visit("/accounts/login/", "input[name=username]")
    tab.sign_in("bob", "bob-pw")
    visit("/", "table.runs")
    visit("/runs/new/", "#new-run")
    before = tab.page.locator("#forecast .forecast-message").inner_text()
    tab.page.fill("#f-steps", "7000")  # the forecast line fetches and redraws
    tab.wait_for_js(f"document.querySelector('#forecast .forecast-message').textContent !== {json.dumps(before)}")
    visit(f"/runs/{run.id}/", "#chart-rollouts .main-svg", "#chart-edge .main-svg", "#chart-heatmap .main-svg",
          "#chart-acc-rollouts .main-svg", "#chart-actions .main-svg")
    tab.wait_for_js("document.querySelector('#chart-rollouts').dataset.points === String(8 * 3)")
    visit(f"/runs/{run.id}/audit/", "table.decisions")
    visit(f"/runs/{run.id}/prompt/?key={KEYS[0]}", "#chart-prompt .main-svg")
    visit(f"/compare/?run={run.id}&run={second.id}", "#chart-compare-accuracy .main-svg")
    visit("/teams/acme/budget/", "#chart-budget .main-svg")
    visit(f"/api/datasets/{dataset.id}/", "pre")  # the browsable API (a dataset)
    visit("/api/docs/", ".swagger-ui .opblock")  # Swagger UI, served from this server
    # the team switcher submits on change without an inline handler
    visit("/", "select[name=team]")
    with tab.page.expect_navigation():
        tab.page.select_option("select[name=team]", "globex")
    assert tab.page.locator("select[name=team] option[selected]").get_attribute("value") == "globex"
    assert tab.page.evaluate("window.__csp") == []
    assert console == [], console
