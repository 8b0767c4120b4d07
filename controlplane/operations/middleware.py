"""OperationsMiddleware, first in MIDDLEWARE: times every request (the latency histogram) and
answers /healthz, /readyz and /metrics itself, before the rest of the stack.

Answering first is what lets an internal checker use them: no host validation (a compose
healthcheck calls http://localhost:8000, a scraper http://web:8000, neither in
DJANGO_ALLOWED_HOSTS), no SSL redirect (plain http inside the network), no session or sign-in.
They build no URL from the Host header, so skipping its validation is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from controlplane.operations import metrics, views

OPERATIONS_PATHS: dict[str, tuple[str, Callable[[HttpRequest], HttpResponse]]] = {
    "/healthz": ("operations:healthz", views.healthz),
    "/readyz": ("operations:readyz", views.readyz),
    "/metrics": ("operations:metrics", views.metrics_view),
}


def view_label(request: HttpRequest) -> str:
    """The URL pattern's name (namespaced), else its route; never the raw path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unresolved"  # a 404, or answered by a middleware before URL resolution (static files)
    return match.view_name or match.route or "unnamed"


class OperationsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        own = OPERATIONS_PATHS.get(request.path_info.rstrip("/") or "/")
        if own is not None and request.method in ("GET", "HEAD"):
            label, view = own
            response = view(request)
        else:
            response = self.get_response(request)
            label = view_label(request)
        metrics.request_observe(view=label, method=request.method or "", status=response.status_code,
                                seconds=time.perf_counter() - started)
        return response
