"""The runs list's figures, shaped from plain values (no database here; tested on their own):
the sort a query asks for, time left (ETA) from the recent pace of steps, elapsed time, and one
row as the page's live updates receive it (``row_live``)."""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frontend.charts import percent

# The columns a user can sort by: the query's name -> the header's words. The default (none
# given) is newest first.
SORTS: dict[str, str] = {
    "name": "Run", "status": "Status", "progress": "Progress", "savings": "Rollouts saved",
    "pass1": "Latest Pass@1", "device_hours": "Device-hours", "launched": "Launched", "elapsed": "Elapsed",
}
DEFAULT_SORT = "-launched"
PACE_STEPS = 20  # the recent steps whose pace the ETA reads
NO_FIGURE = "–"


@dataclass(frozen=True)
class Sort:
    """A sort as queried: ``key`` (a SORTS name) and its direction."""

    key: str
    descending: bool

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.key

    def header(self, key: str) -> dict[str, Any]:
        """A column header's state: its aria-sort and the query that sorts by it next (the same
        column again flips the direction; a new one starts ascending, figures descending)."""
        active = key == self.key
        if active:
            following = key if self.descending else "-" + key
        else:
            following = ("-" + key) if key in ("savings", "pass1", "device_hours", "launched", "elapsed",
                                               "progress") else key
        return {"key": key, "label": SORTS[key], "param": following,
                "aria": ("descending" if self.descending else "ascending") if active else "none"}


def sort_of(raw: str | None) -> Sort:
    """The sort a query asks for (``?sort=-savings``); newest first when none or not one."""
    text = (raw or "").strip()
    key = text.removeprefix("-")
    if key not in SORTS:
        text, key = DEFAULT_SORT, DEFAULT_SORT.removeprefix("-")
    return Sort(key=key, descending=text.startswith("-"))


def seconds_per_step(times: Sequence[dt.datetime], limit: int = PACE_STEPS) -> float | None:
    """The median seconds between consecutive recent steps (``times``: when each step arrived,
    in step order); None with fewer than two. The median shrugs off one slow step (an
    evaluation, a checkpoint) or a gap between attempts."""
    recent = list(times)[-(limit + 1):]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(recent)]
    gaps = [g for g in gaps if g >= 0]
    return statistics.median(gaps) if gaps else None


def eta_seconds(times: Sequence[dt.datetime], steps_left: int) -> float | None:
    """Seconds until the last step: steps left x the median seconds per recent step; None when
    not computable (fewer than two steps yet), 0 with nothing left."""
    if steps_left <= 0:
        return 0.0
    pace = seconds_per_step(times)
    return None if pace is None else steps_left * pace


def duration_words(seconds: float | None) -> str:
    """A duration as read in a table: "45 s", "12 min", "3 h 05 min", "2 d 4 h"; "–" for none."""
    if seconds is None:
        return NO_FIGURE
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def eta_words(seconds: float | None, *, active: bool) -> str:
    """"about 12 min left"; "–" when not computable or the run is not training."""
    if not active or seconds is None:
        return NO_FIGURE
    if seconds < 1:
        return "finishing"
    return f"about {duration_words(seconds)} left"


def elapsed_seconds(started: dt.datetime | None, ended: dt.datetime | None, now: dt.datetime) -> float | None:
    """Seconds from the run's start to its end, or to now while it runs; None before it started."""
    if started is None:
        return None
    return max(((ended or now) - started).total_seconds(), 0.0)


def savings_cell(value: float | None, against: str, formula: str,
                 uniform: Mapping[str, Any] | None = None, headline: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The savings column: a percentage against uniform GRPO (the one yardstick every run has, so
    the column sorts), in its title what it is measured against and how, and why when negative
    (``uniform``: frontend.savings.family_tile). ``headline`` (frontend.savings.headline) adds, as
    a note under the figure, the run's own family's figure when that is another yardstick."""
    why = (uniform or {}).get("why") or ""
    note = ""
    if headline and headline.get("yardstick") != "uniform" and not headline.get("empty"):
        note = str(headline["sentence"])
        why = why or str(headline.get("why") or "")
    title = f"vs {against}. {formula}" + (f" Why: {why}" if why else "") + (f" {note}." if note else "")
    return {"shown": percent(value), "title": title, "note": note}


def row_live(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the list's live update rewrites in one row, from the view's row (``runs_views``):
    JSON, words already written."""
    run = row["run"]
    warmup = row.get("warmup") or {}
    waiting = row.get("waiting_for") or {}
    return {
        "id": run.pk, "status": run.status, "active": row["active"],
        "cancelling": bool(run.cancel_requested and row["active"]),
        "waiting": waiting.get("message", ""),
        "steps_completed": run.steps_completed, "steps_planned": run.steps_planned,
        "progress_percent": round(row["progress"] * 100, 1),
        "warmup": {"percent": warmup["percent"], "short": warmup["short"], "label": warmup["label"]}
        if warmup.get("active") else None,
        "savings": row["savings"]["shown"], "savings_title": row["savings"]["title"],
        "savings_note": row["savings"]["note"],
        "pass1": row["pass1"], "pass1_step": getattr(run, "latest_eval_step", None),
        "device_hours": row["device_hours_shown"],
        "eta": row["eta"], "elapsed": row["elapsed"],
    }
