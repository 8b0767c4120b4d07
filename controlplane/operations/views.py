"""/healthz, /readyz and /metrics: thin; the checks are in health.py, the metrics in metrics.py.

All three are answered by OperationsMiddleware before host validation, the SSL redirect,
sessions and sign-in (an internal checker calls them over plain http by a container name), and
are also routed in controlplane/urls.py for reverse() and for a stack without that middleware.
"""

from __future__ import annotations

import ipaddress
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from controlplane.operations import health, metrics

FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Touches neither the database nor the broker, so a database
    outage never gets a healthy web process restarted."""
    return _no_store(JsonResponse({"status": "ok"}))


def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: 200 when the database answers, every migration is applied and the broker is
    reachable; 503 naming what failed and why. ``?workers=1`` adds who consumes which queue
    (informational: it never fails readiness), for the clients /metrics answers."""
    try:
        ready, results = health.readiness()
        body: dict = {"status": "ok" if ready else "unavailable",
                      "checks": {name: r.to_json() for name, r in results.items()}}
        if not ready:
            body["failed"] = [name for name, r in results.items() if not r.ok]
        if request.GET.get("workers") in ("1", "true", "yes"):
            # Operator detail, and a broadcast to every worker: only for those /metrics answers.
            allowed, _, why = metrics_allowed(request)
            if allowed:
                summary = health.run_bounded("workers", health.workers_summary, health.timeout_seconds())
                body["workers"] = summary.extra if summary.ok else {"error": summary.detail}
                body["workers"]["ms"] = round(summary.ms, 1)
            else:
                body["workers"] = {"error": why.replace("metrics answer", "the workers' summary answers")}
    except Exception as exc:  # noqa: BLE001 - readiness answers 503, never 500
        ready, body = False, {"status": "unavailable", "failed": ["readyz"], "detail": health.describe_error(exc)}
    return _no_store(JsonResponse(body, status=200 if ready else 503))


def metrics_allowed(request: HttpRequest) -> tuple[bool, int, str]:
    """(allowed, status, why). With EDGEPLANE_METRICS_TOKEN set: ``Authorization: Bearer <token>``
    from anywhere. Unset: only a direct client on loopback or a private network (REMOTE_ADDR),
    and not through a proxy (a request carrying X-Forwarded-For or Forwarded came from outside,
    whatever the proxy's own address)."""
    token = getattr(settings, "EDGEPLANE_METRICS_TOKEN", "")
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode()):
            return True, 200, ""
        return False, 401, "send Authorization: Bearer <EDGEPLANE_METRICS_TOKEN>"
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False, 403, "metrics answer loopback and private-network clients only (set EDGEPLANE_METRICS_TOKEN)"
    direct = not any(request.META.get(h) for h in FORWARDED_HEADERS)
    if direct and (address.is_loopback or address.is_private):
        return True, 200, ""
    return False, 403, ("metrics answer direct loopback and private-network clients only; set "
                        "EDGEPLANE_METRICS_TOKEN to scrape from elsewhere with Authorization: Bearer <token>")


def metrics_view(request: HttpRequest) -> HttpResponse:
    allowed, status, why = metrics_allowed(request)
    if not allowed:
        response = HttpResponse(why + "\n", status=status, content_type="text/plain; charset=utf-8")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.exposition(request.META.get("HTTP_ACCEPT"))
    return _no_store(HttpResponse(body, content_type=content_type))
