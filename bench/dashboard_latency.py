"""Dashboard latency on Postgres: the run page and its chart endpoints for a run with
1,000,000 selection decisions.

Fills one run inside Postgres (generate_series, as bench/telemetry_ingest.py does):
--steps step summaries (default 1,000), B = --batch observations a step (256,000), a
decision per (step, slot) up to --decisions (1,000,000: HIVE kept and skipped, HORA
allocations with probe successes, LZE selected/dropped with energies), a dataset of
--prompts training prompts (20,000) with their current states, an evaluation every 10
steps and the usage ledger. Then times, through Django's test client in this process
(middleware, templates and JSON included; no network), median of --repeats:

- the run page's HTML (aim < 1 s), and the other pages;
- every chart endpoint's first read (after=-1) and a live poll (one new step) (aim < 100 ms);
- the one request a chart the run page makes at first (?points=600: every step, downsampled;
  the heat map's ranked prompts, with the ranking's cache cold and warm);
- loading the whole history page by page with the cursor (what the page did before ?points=);
- with Chromium (--browser, on when /usr/bin/chromium and playwright are there): the run page
  opened in a real browser against `manage.py runserver`, timed from the navigation's start:
  the page loaded (its load event), the charts in the first screen drawn, every step in the
  rollout chart, every chart drawn without scrolling (those below the fold draw when the
  browser is idle) and every chart drawn while the page is scrolled through to its end (each
  chart scrolled into view in turn). The first visit (cold browser cache, cold server caches,
  not scrolled) is reported apart from the median of the visits after it.

Prints the figures, the machine's load average with them, and beside them those of
--before (bench/results/dashboard_latency_before.json: the same bench before the run page
drew lazily and downsampled) when that file exists; writes bench/results/dashboard_latency.json.
Needs DATABASE_URL pointing at a scratch Postgres database (it migrates it):
    .venv/bin/python tests/services.py --durable -- .venv/bin/python bench/dashboard_latency.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")  # DEBUG keeps every query in memory

PAGE_AIM_MS = 1000.0
ENDPOINT_AIM_MS = 100.0


def fill(args) -> tuple[object, object]:
    """A team, a user, a dataset and a run with every telemetry table filled. Returns (user, run)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from controlplane.accounts.services import team_create
    from controlplane.budgets.models import UsageEntry
    from controlplane.datasets.models import Dataset, Prompt
    from controlplane.runs.models import Run
    from controlplane.telemetry.models import (
        Evaluation,
        PromptObservation,
        PromptState,
        SelectionDecision,
        StepSummary,
    )

    stamp = time.time_ns()
    team = team_create(name=f"Bench {stamp}", owner_username=f"bench-{stamp}", owner_password="bench")
    user = get_user_model().objects.get(username=f"bench-{stamp}")
    dataset = Dataset.objects.create(team=team, name=f"bench-{stamp}", source_filename="bench", content_hash="0" * 64,
                                     prompt_count=args.prompts + 200, created_by=user)
    selectors = {"hive": {}, "hora": {"n0": 4}, "rlzvp": {}, "lze": {"backward": False, "prune": True}}
    run = Run.objects.create(team=team, dataset=dataset, name="bench: 1M decisions", created_by=user,
                             config={"steps": args.steps, "batch_size": args.batch, "group_size": 8,
                                     "selectors": selectors},
                             methods=list(selectors), status="running", steps_completed=args.steps)
    b, n_prompts, per_step = args.batch, args.prompts, args.decisions // args.steps
    t = {m: m._meta.db_table for m in (Prompt, StepSummary, Evaluation, PromptObservation, SelectionDecision,
                                      PromptState, UsageEntry)}
    key = f"'bench/p:' || (((s * {b}) + i) %% {n_prompts})"
    with connection.cursor() as c:
        c.execute(
            f"INSERT INTO {t[Prompt]} (dataset_id, key, prompt, ground_truth, data_source, index, difficulty, split, "
            "extra_info) SELECT %s, 'bench/p:' || g, to_jsonb(g || '+1='), (g + 1)::text, 'bench', g, "
            "'digits=' || (1 + g %% 4), CASE WHEN g >= %s THEN 'test' ELSE 'train' END, '{}'::jsonb "
            "FROM generate_series(0, %s - 1) AS g", [dataset.id, n_prompts, n_prompts + 200])
        c.execute(
            f"INSERT INTO {t[StepSummary]} (run_id, step, epoch, rollouts_generated, tokens_generated, "
            "rollouts_effective, rollouts_trained, rollouts_uniform, groups_generated, groups_all_correct, "
            "groups_all_wrong, groups_trained, forward_tokens_extra, backward_tokens, rollout_savings, "
            "effective_share_of_generated, flops_estimate, flops_uniform_estimate, device_seconds, "
            "uniform_device_seconds, reward_mean, loss, seconds, metrics, train, alerts, created_at) "
            "SELECT %(run)s, s, s / 78, 1400 + s %% 200, 30000, 1000, 1200, 2048, 200, 20 + s %% 7, 30 - s %% 5, 200, "
            "0, 30000, 1 - (1400 + s %% 200) / 2048.0, 0.7, 1e12, 1.5e12, 3.5, 5.0, 0.3 + s / 2000.0, 0.1, "
            "jsonb_build_object('select', 0.1, 'generate', 2.0, 'reward', 0.4, 'update', 1.0), "
            "jsonb_build_object('hive/stage1_candidates', 600, 'hive/stage1_kept', 420, 'hive/stage2_kept', 256, "
            "  'hive/entropy_threshold', 0.5 + s / 4000.0, 'hive/entropy_correlation', 0.3, "
            "  'rlzvp/shaped_rollouts', 300, 'lze/selected_share', 0.5, 'lze/energy_mean', 0.4, "
            "  'lze/pruned_pool', s / 10, 'lze/replaying', 0), "
            "jsonb_build_object('reward_mean', 0.3, 'loss', 0.1), '[]'::jsonb, now() "
            "FROM generate_series(0, %(steps)s - 1) AS s", {"run": run.id, "steps": args.steps})
        c.execute(
            f"INSERT INTO {t[Evaluation]} (run_id, step, k, pass_at_1, pass_at_k, prompts, by_difficulty, "
            "rollouts_generated_total, device_seconds_total, created_at) "
            "SELECT %s, s, 8, 0.2 + s / 3000.0, 0.5 + s / 3000.0, 200, '{}'::jsonb, s * 1500, s * 3.5, now() "
            "FROM generate_series(0, %s - 1, 10) AS s", [run.id, args.steps])
        c.execute(
            f"INSERT INTO {t[PromptObservation]} (run_id, step, prompt_key, group_size, successes, pass_rate, "
            "response_entropy, prompt_entropy, energy, response_tokens, trained, bucket) "
            f"SELECT %s, s, {key}, 8, (s + i) %% 9, ((s + i) %% 9) / 8.0, 0.3 + (i %% 50) / 100.0, 0.8, "
            "(i %% 97) / 97.0, 40, i %% 2 = 0, "
            "CASE WHEN (s + i) %% 9 = 8 THEN 'too_easy' WHEN (s + i) %% 9 = 0 THEN 'too_hard' ELSE 'edge' END "
            "FROM generate_series(0, %s - 1) AS s, generate_series(0, %s - 1) AS i ORDER BY s, i",
            [run.id, args.steps, b])
        start = time.perf_counter()
        c.execute(
            f"INSERT INTO {t[SelectionDecision]} (run_id, step, prompt_key, layer, method, action, reason, scores, "
            "message) SELECT %(run)s, s, "
            f"'bench/p:' || (((s * {b}) + j %% {b}) %% {n_prompts}), "
            "CASE WHEN j < %(b)s THEN 'pre_rollout' WHEN j < 2 * %(b)s THEN 'allocation' "
            "     WHEN j < 3 * %(b)s THEN 'post_rollout' ELSE 'pre_rollout' END, "
            "CASE WHEN j < %(b)s THEN 'hive' WHEN j < 2 * %(b)s THEN 'hora' WHEN j < 3 * %(b)s THEN 'lze' "
            "     ELSE 'hive' END, "
            "CASE WHEN j < %(b)s THEN 'kept' WHEN j < 2 * %(b)s THEN 'allocated' "
            "     WHEN j < 3 * %(b)s THEN (CASE WHEN j %% 2 = 0 THEN 'selected' ELSE 'dropped' END) "
            "     ELSE 'skipped' END, "
            "CASE WHEN j < %(b)s THEN 'hive.stage2_kept' WHEN j < 2 * %(b)s THEN 'hora.allocated' "
            "     WHEN j < 3 * %(b)s THEN (CASE WHEN j %% 2 = 0 THEN 'lze.selected' ELSE 'lze.not_selected' END) "
            "     ELSE 'hive.stage1_skipped' END, "
            "CASE WHEN j < %(b)s THEN jsonb_build_object('entropy', 0.9, 'threshold', 0.6, 'candidates', 600) "
            "     WHEN j < 2 * %(b)s THEN jsonb_build_object('successes', (s + j) %% 5, 'probe', 4, "
            "       'posterior_mean', 0.5, 'extra', 4 - (s + j) %% 5, 'group_size', 8 - (s + j) %% 5) "
            "     WHEN j < 3 * %(b)s THEN jsonb_build_object('energy', (j %% 97) / 97.0, 'rank', j %% %(b)s + 1, "
            "       'live', %(b)s, 'k', %(b)s / 2) "
            "     ELSE jsonb_build_object('s_rew', 0.1, 's_ent', 0.2, 'keep_probability', 0.1, 'draw', 0.7) END, "
            "CASE WHEN j < %(b)s THEN 'kept by HIVE stage 2: prompt entropy 0.900 >= median 0.600 of 600 candidates' "
            "     WHEN j < 2 * %(b)s THEN 'allocated by HORA: probe hits, posterior mean 0.500, extra rollouts' "
            "     WHEN j < 3 * %(b)s THEN 'selected by LZE: energy 0.400, rank 1 of 256 live groups, top 128 kept' "
            "     ELSE 'skipped by HIVE stage 1: s_rew 0.100, s_ent 0.200, keep probability 0.100, draw 0.700' END "
            "FROM generate_series(0, %(steps)s - 1) AS s, generate_series(0, %(per)s - 1) AS j ORDER BY s, j",
            {"run": run.id, "b": b, "steps": args.steps, "per": per_step})
        fill_seconds = time.perf_counter() - start
        c.execute(
            f"INSERT INTO {t[PromptState]} (run_id, prompt_key, bucket, pass_rate, response_entropy, prompt_entropy, "
            "visits, last_step) SELECT %s, 'bench/p:' || g, "
            "(ARRAY['too_easy','edge','too_hard','pruned','stale'])[1 + g %% 5], (g %% 9) / 8.0, "
            "0.3 + (g %% 50) / 100.0, 0.8, 12, %s - 1 - (g %% 100) FROM generate_series(0, %s - 1) AS g",
            [run.id, args.steps, n_prompts])
        c.execute(
            f"INSERT INTO {t[UsageEntry]} (team_id, run_id, user_id, step, device_seconds, uniform_device_seconds, "
            "recorded_at) SELECT %s, %s, %s, s, 3.5, 5.0, now() - (%s - s) * interval '3 seconds' "
            "FROM generate_series(0, %s - 1) AS s", [team.id, run.id, user.id, args.steps, args.steps])
        for model in t.values():
            c.execute(f"ANALYZE {model}")
    count = SelectionDecision.objects.filter(run=run).count()
    print(f"filled run {run.id}: {count:,} decisions ({fill_seconds:.1f} s), "
          f"{args.steps * b:,} observations, {args.steps:,} steps, {n_prompts:,} prompts", flush=True)
    return user, run


CHARTS = ("chart-rollouts", "chart-shares", "chart-acc-rollouts", "chart-acc-hours", "chart-reward", "chart-seconds",
          "chart-edge", "chart-heatmap", "chart-hive-kept", "chart-hive-entropy", "chart-hora-allocation",
          "chart-lze-energy", "chart-lze-pool", "chart-rlzvp-shaped", "chart-actions")


def browser_render(run, username: str, password: str, steps: int, repeats: int) -> dict[str, float]:
    """Open the run page in Chromium against runserver; median ms to load and to draw."""
    import shutil
    import socket
    import subprocess

    from playwright.sync_api import sync_playwright

    if not shutil.which("/usr/bin/chromium"):
        raise RuntimeError("no /usr/bin/chromium")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload",
                               "--insecure"], cwd=ROOT, env={**os.environ, "DJANGO_DEBUG": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        # html_parsed: the page's HTML is parsed and shown (header, tiles, newest decisions);
        # plotly.js is deferred, so the charts follow once it has been compiled.
        drawn = ("() => { const s = window.edgeplane && window.edgeplane.steps.step; "
                 f"return !!s && s[s.length - 1] === {steps - 1} && "
                 "Number(document.querySelector('#chart-rollouts').dataset.points || 0) > 0; }")
        every = "() => " + " && ".join(f"!!document.querySelector('#{c} .main-svg')" for c in CHARTS)
        # the charts in the first screen: top above the window's bottom edge at load
        first_screen = ("() => [...document.querySelectorAll('.chart[id]')].filter((el) => "
                        "el.getBoundingClientRect().top < window.innerHeight)"
                        ".every((el) => !!el.querySelector('.main-svg'))")
        # a reader scrolling through: each chart into view in turn, one frame apart
        scroll_through = ("async () => { for (const el of document.querySelectorAll('.chart[id]')) { "
                          "el.scrollIntoView({block: 'center'}); "
                          "await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))); } }")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(f"{base}/accounts/login/")
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            times: dict[str, list[float]] = {k: [] for k in (
                "html_parsed", "plotly_js_fetch", "page_loaded", "first_screen_drawn", "every_step_drawn",
                "every_chart_drawn", "every_chart_drawn_scrolled")}

            def visit(scroll: bool) -> None:
                page.goto("about:blank")
                start = time.perf_counter()
                page.goto(f"{base}/runs/{run.id}/", wait_until="load")
                since = lambda: (time.perf_counter() - start) * 1e3
                loaded = since()
                if scroll:
                    page.evaluate(scroll_through)
                    page.wait_for_function(every, timeout=60_000)
                    times["every_chart_drawn_scrolled"].append(since())
                    return
                times["page_loaded"].append(loaded)
                times["html_parsed"].append(page.evaluate(
                    "() => performance.getEntriesByType('navigation')[0].domInteractive"))
                times["plotly_js_fetch"].append(page.evaluate(
                    "() => { const r = performance.getEntriesByType('resource')"
                    ".find((e) => e.name.endsWith('plotly.min.js')); return r ? r.duration : null; }"))
                page.wait_for_function(first_screen, timeout=60_000)
                times["first_screen_drawn"].append(since())
                page.wait_for_function(drawn, timeout=60_000)
                times["every_step_drawn"].append(since())
                page.wait_for_function(every, timeout=60_000)
                times["every_chart_drawn"].append(since())

            # the first visit fills the browser cache (and the server's), as a returning user has
            for i in range(repeats + 1):
                visit(scroll=False)
                if i:  # scrolled through: warm visits only (the first one is the cold visit above)
                    visit(scroll=True)
            browser.close()
        scrolled = times.pop("every_chart_drawn_scrolled")
        out = {name: statistics.median(values[1:]) for name, values in times.items() if values[1:]}
        out["every_chart_drawn_scrolled"] = statistics.median(scrolled)
        out["every_chart_drawn_after_load"] = out["every_chart_drawn"] - out["page_loaded"]
        out["every_chart_drawn_scrolled_after_load"] = out["every_chart_drawn_scrolled"] - out["page_loaded"]
        out["first_visit_every_chart_drawn"] = times["every_chart_drawn"][0]
        out["first_visit_page_loaded"] = times["page_loaded"][0]
        return out
    finally:
        server.terminate()
        server.wait(timeout=20)


def load_average() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages (other work competes for the CPUs)."""
    return [round(v, 2) for v in os.getloadavg()]


def median_ms(fn, repeats: int) -> float:
    from bench._timing import median_ms as timed

    return timed(fn, repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256, help="observations a step (B)")
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=ROOT / "bench" / "results" / "dashboard_latency_before.json",
                        help="figures to print beside these (the bench before the run page's lazy drawing)")
    parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the page in Chromium (skipped when it is not installed)")
    args = parser.parse_args()
    from bench._timing import django_on_postgres

    django_on_postgres()
    from django.test import Client

    from bench._timing import write_results

    user, run = fill(args)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    last = args.steps - 1
    key = f"bench/p:{min(4242, args.prompts - 1)}"

    def get(url: str, params: dict | None = None, status: int = 200):
        def call():
            response = client.get(url, params or {})
            assert response.status_code == status, (url, params, response.status_code)
            return response
        return call

    data = f"/data/runs/{run.id}"
    pages = {
        "run_page": get(f"/runs/{run.id}/"),
        "runs_list": get("/"),
        "audit_first_page": get(f"/runs/{run.id}/audit/"),
        "audit_one_prompt": get(f"/runs/{run.id}/audit/", {"prompt": key}),
        "audit_method_action_steps": get(f"/runs/{run.id}/audit/", {"method": "hora", "action": "allocated",
                                                                     "step_min": 500, "step_max": 600}),
        "audit_deep_cursor": get(f"/runs/{run.id}/audit/", {"cursor": f"{last - 10}.0"}),
        "prompt_page": get(f"/runs/{run.id}/prompt/", {"key": key}),
        "budget_page": get(f"/teams/{run.team.slug}/budget/"),
        "compare_page": get("/compare/", {"run": run.id}),
        "new_run_page": get("/runs/new/"),
    }
    first = {
        "series": get(f"{data}/series/"),
        "evaluations": get(f"{data}/evaluations/"),
        "actions": get(f"{data}/actions/"),
        "hora": get(f"{data}/hora/"),
        "heatmap": get(f"{data}/heatmap/"),
        "energy": get(f"{data}/energy/"),
        "edge_at_step": get(f"{data}/edge/", {"step": last}),
        "edge_now": get(f"{data}/edge/", {"step": "now"}),
        "recent": get(f"{data}/recent/"),
    }
    poll = {
        "series": get(f"{data}/series/", {"after": last - 1}),
        "evaluations": get(f"{data}/evaluations/", {"after": last - 10}),
        "actions": get(f"{data}/actions/", {"after": last - 1}),
        "hora": get(f"{data}/hora/", {"after": last - 1}),
        "heatmap": get(f"{data}/heatmap/", {"after": last - 5, "ranked_through": last}),
    }
    # the run page's first view: one request a chart at its resolution (?points=)
    one_request = {
        "series": get(f"{data}/series/", {"points": 600}),
        "actions": get(f"{data}/actions/", {"points": 600}),
        "hora": get(f"{data}/hora/", {"points": 600}),
        "heatmap_most_active": get(f"{data}/heatmap/", {"order": "active"}),
        "heatmap_most_changed": get(f"{data}/heatmap/", {"order": "changed"}),
    }

    def cold(fn):
        def call():
            from django.core.cache import cache

            cache.clear()  # the heat map's ranking, as on a run's first view
            return fn()
        return call

    one_request["heatmap_most_active_cold_cache"] = cold(one_request["heatmap_most_active"])

    def whole_history(name: str):
        def call():
            after, n = -1, 0
            while True:
                body = client.get(f"{data}/{name}/", {"after": after}).json()
                after, n = body["next_after"], n + 1
                if not body["has_more"]:
                    return n
        return call

    figures: dict[str, dict[str, float]] = {"pages_ms": {}, "first_read_ms": {}, "poll_ms": {}, "one_request_ms": {},
                                            "history_ms": {}}
    load_start = load_average()
    for name, fn in pages.items():
        figures["pages_ms"][name] = median_ms(fn, args.repeats)
    for name, fn in first.items():
        figures["first_read_ms"][name] = median_ms(fn, args.repeats)
    for name, fn in poll.items():
        figures["poll_ms"][name] = median_ms(fn, args.repeats)
    for name, fn in one_request.items():
        figures["one_request_ms"][name] = median_ms(fn, args.repeats)
    requests = {}
    for name in ("series", "evaluations", "actions", "hora", "heatmap"):
        requests[name] = whole_history(name)()
        figures["history_ms"][name] = median_ms(whole_history(name), max(3, args.repeats // 3))
    figures["first_view_ms"] = {"run_page_plus_first_reads": figures["pages_ms"]["run_page"]
                                + sum(figures["first_read_ms"].values())}

    load = {"server_figures": load_start}
    if args.browser:
        try:
            load["browser_start"] = load_average()
            figures["browser_ms"] = browser_render(run, user.username, "bench", args.steps, max(3, args.repeats // 3))
            load["browser_end"] = load_average()
        except (ImportError, RuntimeError) as exc:
            print(f"browser timing skipped: {exc}")
    before = json.loads(args.before.read_text())["median"] if args.before and args.before.exists() else {}

    endpoint_max = max(max(figures["first_read_ms"].values()), max(figures["poll_ms"].values()))
    verdict = {
        "run_page_under_1s": figures["pages_ms"]["run_page"] < PAGE_AIM_MS,
        "endpoints_under_100ms": endpoint_max < ENDPOINT_AIM_MS,
        "slowest_endpoint_ms": endpoint_max,
    }
    print(f"dashboard latency on Postgres, run of {args.decisions:,} decisions (median of {args.repeats}, ms) on "
          f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) {load}")
    if before:
        print(f"  beside each figure: the same figure in {args.before.name}")
    for group in ("pages_ms", "first_read_ms", "poll_ms", "one_request_ms", "history_ms", "first_view_ms",
                  "browser_ms"):
        print(f"  {group}")
        for name, value in figures.get(group, {}).items():
            extra = f"  ({requests[name]} requests)" if group == "history_ms" else ""
            was = before.get(group, {}).get(name)
            then = f"  before {was:9.1f}" if isinstance(was, (int, float)) else ""
            print(f"    {name:38s} {value:9.1f}{then}{extra}")
    print(f"  run page < {PAGE_AIM_MS:.0f} ms: {verdict['run_page_under_1s']}; every endpoint < "
          f"{ENDPOINT_AIM_MS:.0f} ms: {verdict['endpoints_under_100ms']} (slowest {endpoint_max:.1f} ms)")
    path = write_results("dashboard_latency", {
        "median": figures, "aims_ms": {"page": PAGE_AIM_MS, "endpoint": ENDPOINT_AIM_MS}, "verdict": verdict,
        "history_requests": requests, "load_average": load,
        "conditions": "runserver (one process, threads) and headless Chromium on this machine, sharing its CPUs "
                      "with whatever else runs (see load_average); browser figures from the navigation's start",
        "size": {"decisions": args.decisions, "steps": args.steps, "observations": args.steps * args.batch,
                 "prompts": args.prompts},
    }, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
