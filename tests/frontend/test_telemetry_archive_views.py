"""The dashboard and an archived run: the prompt page, the audit trail, the charts drawn from each
prompt's rows (energy, the learning-edge map at a step, the heat map by prompt) and their downloads
show what they showed from the database; the run page says where its per-prompt detail is read
from; the team page sets the retention."""

from __future__ import annotations

import datetime as dt
import math
import random
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.models import PromptObservation, SelectionDecision
from controlplane.telemetry.retention import run_telemetry_archive
from controlplane.telemetry.services import step_ingest
from frontend import selectors as sel
from tests.frontend.conftest import KEYS
from tests.frontend.helpers import CONFIG, step_record

pytestmark = pytest.mark.django_db

AUDIT_QUERIES = [
    {},
    {"prompt": KEYS[1]},
    {"method": "hora"},
    {"action": "allocated", "step_min": 2, "step_max": 4},
    {"method": "hive", "action": "skipped"},
    {"prompt": "nobody"},
]


@pytest.fixture(autouse=True)
def _archive_dir(settings, tmp_path):
    settings.EDGEPLANE_ARCHIVE_DIR = tmp_path / "archive"


@pytest.fixture
def finished(run):
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now() - dt.timedelta(days=60))
    return Run.objects.get(pk=run.pk)


def _page(response) -> str:
    """The page without what differs between two renders (CSRF tokens) or marks the archive."""
    assert response.status_code == 200, response.status_code
    text = response.content.decode()
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", text)
    return re.sub(r'<p class="archived-note[^>]*>.*?</p>', "", text)


def _streamed(response) -> bytes:
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def _views(client, run) -> dict:
    out = {}
    for key in KEYS:
        response = client.get(f"/runs/{run.id}/prompt/", {"key": key})
        out[f"prompt {key}"] = (
            _page(response),
            response.context["series"],
            response.context["changes"],
            response.context["decisions"],
        )
    for query in AUDIT_QUERIES:
        pages, params = [], dict(query)
        while True:
            response = client.get(f"/runs/{run.id}/audit/", params)
            pages.append((_page(response), response.context["rows"]))
            if not response.context["next_url"]:
                break
            params = {**query, "cursor": response.context["next_url"].rsplit("cursor=", 1)[1]}
        out[f"audit {query}"] = pages
        for fmt in ("csv", "json"):
            response = client.get(f"/runs/{run.id}/audit/export/", {**query, "format": fmt})
            out[f"export {fmt} {query}"] = _streamed(response)
    out["recent"] = client.get(f"/data/runs/{run.id}/recent/").json()["results"]
    cache.clear()  # the windowed charts are cached by the newest step, which archiving leaves alone
    for chart in ("actions", "hora"):  # drawn from the steps' decision counts, which stay in the database
        for params in ({}, {"after": 2}, {"points": 2}, {"points": 4, "until": 4}):
            out[f"chart {chart} {params}"] = client.get(f"/data/runs/{run.id}/{chart}/", params).json()
    for chart in ("decisions", "hora"):
        out[f"export {chart}"] = client.get(f"/data/runs/{run.id}/export/", {"chart": chart, "format": "csv"}).content
    out.update(_prompt_charts(client, run))
    return out


def _prompt_charts(client, run, steps: range | None = None) -> dict:
    """The charts built from each prompt's rows: energy and the learning-edge map at every step
    (and at one with no rows), the heat map by prompt in both orders, windows, searches, pages
    and a poll, and their downloads."""
    cache.clear()  # the heat map's ranking is cached per window: read it afresh
    run = Run.objects.get(pk=run.pk)  # archived or not, as the views read it
    last = sel.last_step(run)
    steps = steps if steps is not None else range(last + 2)
    out = {}
    for step in steps:
        out[f"energy {step}"] = client.get(f"/data/runs/{run.id}/energy/", {"step": step}).json()
        out[f"edge {step}"] = client.get(f"/data/runs/{run.id}/edge/", {"step": step}).json()
        out[f"edge {step} first 3"] = sel.edge_points(run, step, limit=3)  # a map of more prompts than it draws
    out["energy newest"] = client.get(f"/data/runs/{run.id}/energy/").json()
    heatmaps = [{}, {"order": "changed"}, {"since": last // 2}, {"since": last + 5}, {"limit": 2, "offset": 1},
                {"q": "ADD:1"}, {"order": "changed", "limit": 3, "offset": 2, "since": 1}, {"q": "nobody"}]
    for params in heatmaps:
        first = client.get(f"/data/runs/{run.id}/heatmap/", params).json()
        out[f"heatmap {params}"] = first
        poll = {**params, "after": max(last // 3, 0), "ranked_through": first["ranked_through"]}
        out[f"heatmap poll {params}"] = client.get(f"/data/runs/{run.id}/heatmap/", poll).json()
    for chart, params in (("energy", {"step": 1}), ("edge", {"step": last}), ("heatmap", {"order": "changed"})):
        response = client.get(f"/data/runs/{run.id}/export/", {"chart": chart, "format": "csv", **params})
        out[f"export {chart} {params}"] = response.content
    return out


def _same(a, b, path="") -> None:
    """Equal, floats to 1e-12 relative: a heat-map cell's mean sums its pass rates in another order
    in Arrow than in Postgres. Everything else must be identical."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (path, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def test_the_prompt_page_audit_trail_and_downloads_read_the_same_from_the_archive(bob, finished, monkeypatch):
    monkeypatch.setattr("frontend.selectors.AUDIT_PAGE", 7)  # pages of a few decisions, and several of them
    monkeypatch.setattr("frontend.exports.AUDIT_CHUNK", 5)
    before = _views(bob, finished)
    assert len(before["audit {}"]) > 1  # several pages of decisions
    assert before[f"prompt {KEYS[0]}"][3] and before["recent"]
    assert before["chart hora {}"]["step"] and before["chart actions {'points': 2}"]["step"]

    run_telemetry_archive(finished.id)
    assert not PromptObservation.objects.filter(run=finished).exists()
    assert not SelectionDecision.objects.filter(run=finished).exists()

    after = _views(bob, finished)
    for name in before:
        assert after[name] == before[name], name
    prompt = bob.get(f"/runs/{finished.id}/prompt/", {"key": KEYS[0]}).content.decode()
    assert "Read from the Parquet archive" in prompt


def _random_run(acme, dataset, seed: int, steps_planned: int) -> Run:
    """A finished run of random steps: a random subset of the steps, each observing a random subset
    of prompts (keys with odd characters among them) with random successes, entropies and
    energies (some missing), so prompts differ in how often and how they were seen."""
    rng = random.Random(seed)
    keys = [f"edgeplane/add:{i}" for i in range(12)] + ["Ä, \"quoted\"\tkey", "add:1 % _x", "zz"]
    bob = get_user_model().objects.get(username="bob")
    run = run_create(team=acme, dataset=dataset, name=f"random-{seed}", user=bob,
                     config={**CONFIG, "steps": steps_planned})
    run_claim(run_id=run.id, worker="test:1")
    for step in sorted(rng.sample(range(min(steps_planned, 60)), rng.randint(8, 20))):
        chosen = rng.sample(keys, rng.randint(1, len(keys)))
        record = step_record(step, chosen, skipped=[k for k in keys if k not in chosen][:2])
        for observation in record["observations"]:
            wins = rng.randint(0, 4)
            observation.update(successes=wins, pass_rate=wins / 4,
                               bucket="too_easy" if wins == 4 else "too_hard" if wins == 0 else "edge",
                               energy=None if rng.random() < 0.2 else rng.random(),
                               response_entropy=None if rng.random() < 0.2 else rng.random() * 2)
        step_ingest(run_id=run.id, record=record)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED,
                                         finished_at=timezone.now() - dt.timedelta(days=60))
    return Run.objects.get(pk=run.pk)


@pytest.mark.parametrize(("seed", "steps_planned"), [(1, 20), (2, 1000), (3, 450)])
def test_charts_of_each_prompts_rows_read_the_same_from_the_archive(bob, acme, dataset, enqueued, seed,
                                                                      steps_planned):
    """The class: random runs, one step a heat-map column (20 planned steps) or several (1,000 and 450
    planned: 5 and 3 steps a column), every step's energy and learning-edge map, the heat map's
    orders, windows, pages, searches and polls, and the downloads."""
    run = _random_run(acme, dataset, seed, steps_planned)
    before = _prompt_charts(bob, run)
    assert any(v["selected"] or v["not_selected"] for k, v in before.items() if k.startswith("energy "))
    assert any(v["shown"] for k, v in before.items() if k.startswith("edge ") and isinstance(v, dict)), "no map"
    assert before["heatmap {}"]["rows"] and before["heatmap {}"]["steps_per_column"] == -(-steps_planned // 200)
    run_telemetry_archive(run.id)
    assert not PromptObservation.objects.filter(run=run).exists()
    after = _prompt_charts(bob, run)
    assert after.keys() == before.keys()
    for name in before:
        _same(after[name], before[name], name)


def test_the_run_page_says_the_per_prompt_detail_was_archived(bob, finished):
    assert "run-archived" not in bob.get(f"/runs/{finished.id}/").content.decode()
    run_telemetry_archive(finished.id)
    page = bob.get(f"/runs/{finished.id}/").content.decode()
    assert 'id="run-archived"' in page and "read from the Parquet archive" in page


# -- the team page's retention form -------------------------------------------------------------------------


def test_an_admin_sets_and_clears_the_retention_on_the_team_page(alice, acme):
    page = alice.get("/teams/acme/").content.decode()
    assert 'value="set_retention"' in page and "kept forever" in page
    response = alice.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": "90"})
    assert response.status_code == 302
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days == 90
    assert "90 days" in alice.get("/teams/acme/").content.decode()
    alice.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": ""})
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days is None


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "a month"])
def test_the_team_page_refuses_a_retention_that_is_not_whole_days(alice, acme, raw):
    acme.telemetry_retention_days = 30
    acme.save()
    response = alice.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": raw})
    assert response.status_code == 400
    page = response.content.decode()
    assert "whole number of days, 1 or more" in page and f'value="{raw}"' in page
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days == 30


def test_only_admins_set_the_retention(bob, vera, mallory, acme):
    for client in (bob, vera):
        page = client.get("/teams/acme/").content.decode()
        assert 'value="set_retention"' not in page
        assert (
            client.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": "3"}).status_code == 403
        )
    assert mallory.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": "3"}).status_code == 404
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days is None
