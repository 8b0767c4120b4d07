"""The run page's logs panel: the worker's lines of a run (controlplane/operations/run_logs.py keeps
them), read with a cursor, and the whole log as a download.

``data/runs/<id>/logs/?after=<line id>&level=<name>`` answers ``{status, finished, next_after, has_more,
lines, kept, dropped, cap}``: lines after the cursor at that level or above, oldest first. Visibility as
the other run endpoints: another team's run is a 404. ``finished`` turns true only a few seconds after
the run ended, so the lines its worker flushed at the task's end are in before the page stops polling.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponseBadRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from controlplane.operations.run_logs import FLUSH_SECONDS, RUN_LOG_CAP
from controlplane.operations.selectors import run_log_lines, run_log_page
from controlplane.runs.models import FINISHED, Run
from controlplane.runs.selectors import run_for_user_or_none
from frontend.data_views import run_json
from frontend.forms import ID_MAX, BadParameter, int_param, refuse_malformed

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
          "CRITICAL": logging.CRITICAL}
SETTLE = dt.timedelta(seconds=FLUSH_SECONDS * 5)  # a finished run's last lines are flushed within this


def min_level(raw: str) -> int:
    """``level`` as a number: a level's name (any case), empty for every line; else BadParameter."""
    name = raw.strip().upper()
    if not name:
        return 0
    if name not in LEVELS:
        raise BadParameter(f"level must be one of {', '.join(LEVELS)}, got {raw!r}")
    return LEVELS[name]


def level_name(number: int) -> str:
    return logging.getLevelName(number) if isinstance(logging.getLevelName(number), str) else str(number)


def _line(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "seq": row["seq"], "attempt": row["attempt"], "at": row["at"].isoformat(),
            "level": level_name(row["level"]), "logger": row["logger"], "message": row["message"]}


@run_json
def logs(request: HttpRequest, run: Run) -> dict[str, Any]:
    raw = request.GET.get("after", "")
    after = int_param(raw, "after", minimum=0, maximum=ID_MAX) if raw else 0
    level = min_level(request.GET.get("level", ""))
    finished = run.status in FINISHED and (run.finished_at is None or timezone.now() - run.finished_at > SETTLE)
    page = run_log_page(run, after=after, min_level=level)  # read after the status: a finished answer holds all
    return {"status": run.status, "finished": finished, "lines": [_line(r) for r in page.lines],
            "next_after": page.lines[-1]["id"] if page.lines else after, "has_more": page.has_more,
            "kept": page.kept, "dropped": page.dropped, "cap": RUN_LOG_CAP}


def text_line(row: dict[str, Any]) -> str:
    """One line of the download: as the worker's plain format writes it, with the attempt."""
    attempt = f" [attempt {row['attempt']}]" if row["attempt"] is not None else ""
    stamp = row["at"].astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return f"{stamp} {level_name(row['level'])} {row['logger']}{attempt}: {row['message']}\n"


@login_required
@require_GET
@refuse_malformed
def logs_download(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    """The run's whole log (what the page's level filter shows) as a text file, streamed."""
    run = run_for_user_or_none(request.user, run_id)
    if run is None:
        raise Http404(f"no run {run_id} in your teams")
    try:
        level = min_level(request.GET.get("level", ""))
    except BadParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(  # a chunk of lines at a time, never the whole log in memory
        (text_line(r) for r in run_log_lines(run, min_level=level)),
                                     content_type="text/plain; charset=utf-8")
    name = f"run-{run.id}-{slugify(run.name)[:40] or 'run'}-log.txt"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    response["Cache-Control"] = "no-store"
    return response
