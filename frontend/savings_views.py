"""The run page's savings tiles as JSON, for their live updates: the same words, formulas and
"why" lines the page was rendered with (frontend/savings.py), for the run's totals now."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from controlplane.runs.models import Run
from controlplane.runs.selectors import run_totals
from frontend import savings
from frontend.data_views import run_json


@run_json
def run_savings(request: HttpRequest, run: Run) -> dict[str, Any]:
    return savings.savings_tiles(run_totals(run), run.config)
