"""Downloads of what the run page draws: each chart's data as CSV or JSON, and the audit trail
(every page, with the page's filters) streamed.

The data come from the same selectors and the same shaping functions (``frontend.charts``) as the
chart endpoints, over the whole run at once, so the numbers in a file are the numbers drawn. The JSON
file holds the shaping function's output as it is (``data``); the CSV file lays the same values out
as a table (``table``), one row a step for the per-step charts, one row a cell for the heat maps.
Column names are the series' names in the JSON (stable, for scripts), not the charts' legends.

Every text cell of a CSV file that a spreadsheet would read as a formula (starting with = + - @, a
tab or a carriage return) gets a leading ' (OWASP's advice on CSV injection): prompt keys, reasons
and run names are written by users. Another team's run is a 404, as everywhere.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from controlplane.runs.models import Run
from controlplane.runs.selectors import run_for_user_or_none, run_totals
from frontend import charts, data_views
from frontend import selectors as sel
from frontend.audit_filters import audit_filters
from frontend.forms import BadParameter, int_param, refuse_malformed
from workers.selection.registry import REGISTRY

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
AUDIT_CHUNK = 1000  # decisions read a page at a time while the download streams
ALL_STEPS = 10**9  # a run's every step in one read (the per-page limits are for polling)

# -- CSV ------------------------------------------------------------------------------------------------


def cell(value: Any) -> Any:
    """A value as a CSV cell: text that could start a formula gets a leading ' (numbers never do:
    -0.5 stays a number); None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """The CSV text of a table, a line at a time (for a streamed download)."""
    writer = csv.writer(_Echo())
    yield writer.writerow([cell(h) for h in header])
    for row in rows:
        yield writer.writerow([cell(v) for v in row])


# -- tables from the shaping functions' output ----------------------------------------------------------


def columns_by_step(data: dict[str, Any], x: str = "step") -> tuple[list[str], list[list[Any]]]:
    """A per-step table from columns: every list as long as ``x`` is a column, every dict of them a
    group of columns named ``group.name`` (seconds.<phase>, metrics.<series>, counts.<method.action>)."""
    n = len(data.get(x) or [])
    columns: dict[str, list[Any]] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, list) and len(value) == n:
            columns[prefix] = value
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)

    walk("", data)
    header = [x, *[c for c in columns if c != x]]
    return header, [[columns[c][i] for c in header] for i in range(n)]


def hora_table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = [[step, hits, data["mean_extra"][h][i], data["prompts"][h][i]]
            for i, step in enumerate(data["step"]) for h, hits in enumerate(data["successes"])]
    return ["step", "probe_successes", "mean_extra_rollouts", "prompts"], rows


def energy_table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    edges = data["edges"]
    rows = [[edges[i], edges[i + 1], data["selected"][i], data["not_selected"][i]] for i in range(len(edges) - 1)]
    return ["energy_from", "energy_to", "selected", "not_selected"], rows


def edge_table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = [[bucket, key, x, y] for bucket, trace in data["buckets"].items()
            for key, x, y in zip(trace["key"], trace["x"], trace["y"], strict=True)]
    return ["bucket", "prompt_key", "pass_rate", "response_entropy"], rows


def heatmap_table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = [[label, step, data["z"][r][i], data["observations"][r][i]]
            for r, label in enumerate(data["rows"]) for i, step in enumerate(data["step"])]
    return ["row", "step", "pass_rate", "observations"], rows


# -- each chart's data, whole ---------------------------------------------------------------------------


def _steps(run: Run, request: HttpRequest) -> dict[str, Any]:
    rows = sel.step_rows(run, -1, limit=ALL_STEPS)
    return charts.step_series(rows, run_totals(run, through_step=-1), methods=list(run.config.get("selectors", {})),
                              phases=charts.phases_of(run.engine))


def _evaluations(run: Run, request: HttpRequest) -> dict[str, Any]:
    return charts.accuracy_series(sel.evaluation_rows(run, -1, limit=ALL_STEPS))


def _decisions(run: Run, request: HttpRequest) -> dict[str, Any]:
    return charts.action_counts(sel.action_count_rows(run, -1, sel.last_step(run)))


def _hora(run: Run, request: HttpRequest) -> dict[str, Any]:
    params = run.config.get("selectors", {}).get("hora") or {}
    defaults = {d["name"]: d["default"] for d in REGISTRY["hora"].Params.describe()}
    n0 = int(params.get("n0", defaults["n0"]))
    return charts.hora_allocation(sel.hora_rows(run, -1, sel.last_step(run)), max_successes=n0)


def _step_param(request: HttpRequest) -> int | None:
    raw = request.GET.get("step", "")
    return None if raw in ("", "now") else int_param(raw, "step", minimum=0)


def _energy(run: Run, request: HttpRequest) -> dict[str, Any]:
    step = _step_param(request)
    step = sel.last_step(run) if step is None else step
    return {"at_step": step, **charts.energy_histogram(sel.energy_rows(run, step))}


def _edge(run: Run, request: HttpRequest) -> dict[str, Any]:
    step = _step_param(request)
    points, total = sel.edge_points(run, step)
    return {"at_step": step, **charts.edge_map(points, total=total)}


def _heatmap(run: Run, request: HttpRequest) -> dict[str, Any]:
    # the page of prompts the chart's endpoint answers for the same query (order, since, offset, q)
    page = data_views.heatmap_page(request, run)
    return {key: page[key] for key in ("rows", "step", "steps_per_column", "z", "observations")}


@dataclass(frozen=True)
class Source:
    data: Callable[[Run, HttpRequest], dict[str, Any]]
    table: Callable[[dict[str, Any]], tuple[list[str], list[list[Any]]]]
    title: str  # the file's name says what it holds


SOURCES: dict[str, Source] = {
    "steps": Source(_steps, columns_by_step, "steps"),
    "evaluations": Source(_evaluations, columns_by_step, "evaluations"),
    "decisions": Source(_decisions, columns_by_step, "decisions-per-step"),
    "hora": Source(_hora, hora_table, "hora-allocation"),
    "energy": Source(_energy, energy_table, "lze-energy"),
    "edge": Source(_edge, edge_table, "learning-edge"),
    "heatmap": Source(_heatmap, heatmap_table, "pass-rate-heatmap"),
}

# The run page's charts and the data each draws (the method panels are added by their view).
CHART_SOURCES = {
    "chart-rollouts": "steps", "chart-savings": "steps", "chart-shares": "steps", "chart-reward": "steps",
    "chart-seconds": "steps", "chart-acc-rollouts": "evaluations", "chart-acc-hours": "evaluations",
    "chart-edge": "edge", "chart-heatmap": "heatmap", "chart-actions": "decisions",
}
PANEL_VIEW_SOURCES = {"hora_allocation": "hora", "lze_energy": "energy"}


def chart_table(run: Run, source: str, request: HttpRequest) -> tuple[dict[str, Any], list[str], list[list[Any]]]:
    """(the shaping function's output, the CSV's header, its rows) of one source."""
    spec = SOURCES[source]
    data = spec.data(run, request)
    header, rows = spec.table(data)
    return data, header, rows


def panel_source(panel: dict[str, Any]) -> str:
    """What a method panel draws from: its own view's data, else the per-step series (decision
    counts when every series of the panel counts decisions)."""
    if panel["view"] in PANEL_VIEW_SOURCES:
        return PANEL_VIEW_SOURCES[panel["view"]]
    series = panel.get("series") or []
    return "decisions" if series and all(s.get("source") == "decision" for s in series) else "steps"


def chart_downloads(run: Run, panels: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each chart of the run page (by its element id) with the URLs of its data as CSV and JSON."""
    sources = {**CHART_SOURCES, **{p["id"]: panel_source(p) for p in panels}}
    base = reverse("frontend:data-export", args=[run.id])
    return {chart: {fmt: f"{base}?{urlencode({'chart': source, 'format': fmt})}" for fmt in FORMATS}
            for chart, source in sources.items()}


def run_page_tools(run: Run, panels: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What the run page's tools need (frontend/static/frontend/downloads.js, logs.js, audit_link.js): each
    chart's downloads, the logs' endpoints, the audit trail's address."""
    return {"downloads": chart_downloads(run, panels),
            "logs": reverse("frontend:data-logs", args=[run.id]),
            "logs_download": reverse("frontend:logs-download", args=[run.id]),
            "audit": reverse("frontend:audit", args=[run.id])}


def _filename(run: Run, what: str, fmt: str) -> str:
    return f"run-{run.id}-{slugify(run.name)[:40] or 'run'}-{what}.{fmt}"


def _attachment(response: HttpResponse, name: str) -> HttpResponse:
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    response["Cache-Control"] = "no-store"
    return response


def _format(request: HttpRequest) -> str:
    fmt = request.GET.get("format", "csv")
    if fmt not in FORMATS:
        raise BadParameter(f"format must be csv or json, got {fmt!r}")
    return fmt


def _run(request: HttpRequest, run_id: int) -> Run:
    run = run_for_user_or_none(request.user, run_id)
    if run is None:
        raise Http404(f"no run {run_id} in your teams")
    return run


@login_required
@require_GET
@refuse_malformed
def chart_export(request: HttpRequest, run_id: int) -> HttpResponse:
    """One chart's data, whole: ``data/runs/<id>/export/?chart=<name>&format=<csv|json>`` (``step`` for the
    learning-edge map and the energy histogram, as their endpoints take it)."""
    run = _run(request, run_id)
    source = request.GET.get("chart", "")
    try:
        fmt = _format(request)
        if source not in SOURCES:
            raise BadParameter(f"chart must be one of {', '.join(SOURCES)}, got {source!r}")
        data, header, rows = chart_table(run, source, request)
    except BadParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    if fmt == "json":
        body = json.dumps({"run": run.id, "run_name": run.name, "chart": source, "data": data}, cls=DjangoJSONEncoder)
        response = HttpResponse(body, content_type=FORMATS[fmt])
    else:
        response = HttpResponse("".join(csv_lines(header, rows)), content_type=FORMATS[fmt])
    return _attachment(response, _filename(run, SOURCES[source].title, fmt))


# -- the audit trail ------------------------------------------------------------------------------------

AUDIT_COLUMNS = ("step", "prompt_key", "layer", "method", "action", "message", "reason", "scores", "id")


def audit_rows(run: Run, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every decision the filters keep, in the audit page's order, read a keyset page at a time."""
    cursor = None
    while True:
        page = sel.audit_page(run, **filters, cursor=cursor, limit=AUDIT_CHUNK)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _audit_json(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for i, row in enumerate(rows):
        yield ("," if i else "") + json.dumps({k: row[k] for k in AUDIT_COLUMNS}, cls=DjangoJSONEncoder)
    yield "]\n"


def _audit_csv(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    return csv_lines(list(AUDIT_COLUMNS), ([json.dumps(r[k]) if k == "scores" else r[k] for k in AUDIT_COLUMNS]
                                           for r in rows))


@login_required
@require_GET
@refuse_malformed
def audit_export(request: HttpRequest, run_id: int) -> StreamingHttpResponse | HttpResponse:
    """The audit trail with the audit page's filters (prompt, method, action, steps), every page of it,
    streamed: ``runs/<id>/audit/export/?format=<csv|json>&<the page's filters>``."""
    run = _run(request, run_id)
    filters, _, errors = audit_filters(request.GET)
    try:
        fmt = _format(request)
    except BadParameter as exc:
        errors.append(str(exc))
    if errors:
        return HttpResponseBadRequest("; ".join(errors), content_type="text/plain; charset=utf-8")
    rows = audit_rows(run, filters)
    body = _audit_json(rows) if fmt == "json" else _audit_csv(rows)
    response = StreamingHttpResponse(body, content_type=FORMATS[fmt])
    return _attachment(response, _filename(run, "audit-trail", fmt))
