"""The audit trail's filters, read from a query the same way by its page (frontend/views.py) and its
downloads (frontend/exports.py)."""

from __future__ import annotations

from typing import Any

from frontend.forms import STEP_MAX, BadParameter, int_param
from workers.selection.decisions import Action


def _step_or_none(raw: str | None) -> int | None:
    """A step in [0, STEP_MAX] (the column it meets), else None."""
    try:
        return int_param(raw or "", "value", minimum=0, maximum=STEP_MAX)
    except BadParameter:
        return None


def audit_filters(query) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The audit trail's filters from a query (the page's form, its downloads): the selector's keyword
    arguments, the raw values (the form shows them back) and what is wrong with them. A step and an
    action together (from and to the same step) are what a click on the decisions chart asks for."""
    raw = {name: query.get(name, "").strip() for name in ("prompt", "method", "action", "step_min", "step_max",
                                                          "cursor")}
    errors = []
    step_min, step_max = _step_or_none(raw["step_min"]), _step_or_none(raw["step_max"])
    for name, value in (("step_min", step_min), ("step_max", step_max)):
        if raw[name] and (value is None or value < 0):
            errors.append(f"{name} must be a whole number >= 0, got {raw[name]!r}")
    if step_min is not None and step_max is not None and step_min > step_max:
        errors.append("step_max must be >= step_min")
    if raw["action"] and raw["action"] not in {a.value for a in Action}:
        errors.append(f"unknown action {raw['action']!r}")
    filters = {"prompt": raw["prompt"] or None, "method": raw["method"] or None, "action": raw["action"] or None,
               "step_min": step_min, "step_max": step_max}
    return filters, raw, errors
