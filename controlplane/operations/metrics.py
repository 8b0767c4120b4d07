"""Prometheus metrics (prometheus_client; docs/operations.md lists every series).

Counted where things happen (in the process that does them):
- ``edgeplane_http_request_duration_seconds`` (histogram; view, method, status class), by
  OperationsMiddleware. The view is the URL pattern's name (``api:run-detail``), never the raw
  path, and the method one of the standard ones ("other" otherwise): bounded label sets.
- ``edgeplane_ingest_rows_total`` (counter; kind = steps, observations, decisions), by the
  telemetry ingest once its transaction commits. A local run's steps are ingested in the worker
  that trains it: the worker serves its own counters (EDGEPLANE_WORKER_METRICS_PORT).

Read at scrape time by custom collectors, in the web only, each bounded in time
(EDGEPLANE_HEALTH_TIMEOUT_SECONDS) and one aggregate query or broker call each: runs by status,
budget use per team, queue depth per Celery queue. A collector that fails or times out leaves
its series out and says so in ``edgeplane_metrics_collector_up{collector=...} 0``.

Several processes (gunicorn workers, a prefork Celery pool): with PROMETHEUS_MULTIPROC_DIR set,
every process writes its samples to files there and a scrape aggregates them
(``prometheus_client.multiprocess.MultiProcessCollector``), whichever process answers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    os.makedirs(MULTIPROC_DIR, exist_ok=True)  # prometheus_client writes there from the first sample

NAMESPACE = "edgeplane"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INGEST_KINDS = ("steps", "observations", "decisions")

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds", "Time to answer an HTTP request, by view (URL pattern name), method and "
    "status class", ["view", "method", "status"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS)
INGEST_ROWS = Counter(
    "ingest_rows", "Telemetry rows stored, by kind (steps, observations, decisions); a replayed step counts again",
    ["kind"], namespace=NAMESPACE)
for _kind in INGEST_KINDS:
    INGEST_ROWS.labels(kind=_kind)  # every kind present from the start (0), so rate() has a baseline


def request_observe(*, view: str, method: str, status: int, seconds: float) -> None:
    REQUEST_LATENCY.labels(view=view, method=method if method in METHODS else "other",
                           status=f"{status // 100}xx").observe(seconds)


def ingest_rows_count(*, steps: int, observations: int, decisions: int) -> None:
    """Count a step's rows once its transaction commits (a rolled-back step counts nothing)."""
    from django.db import transaction

    def count() -> None:
        for kind, n in (("steps", steps), ("observations", observations), ("decisions", decisions)):
            if n:
                INGEST_ROWS.labels(kind=kind).inc(n)

    transaction.on_commit(count)


# -- read at scrape ------------------------------------------------------------------------------------------
class BoundedCollector:
    """A collector that reads the database or the broker at scrape, in the health pool, within the
    health timeout; what it cannot read is left out and reported by edgeplane_metrics_collector_up."""

    name = ""
    families: tuple[tuple[str, str, list[str]], ...] = ()  # (name, help, labels)
    status: ClassVar[dict[str, bool]] = {}  # each collector's last read, for edgeplane_metrics_collector_up

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not query anything.
        for name, documentation, labels in self.families:
            yield GaugeMetricFamily(name, documentation, labels=labels)

    def read(self) -> list[Metric]:
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        from controlplane.operations import health

        holder: dict[str, Any] = {}

        def work() -> None:
            from django.db import connections

            try:
                holder["metrics"] = self.read()
            finally:
                connections.close_all()  # the pool thread's connection

        result = health.run_bounded(self.name, work, health.timeout_seconds())
        BoundedCollector.status[self.name] = result.ok
        if result.ok:
            yield from holder["metrics"]


class RunsCollector(BoundedCollector):
    name = "runs"
    families = (("edgeplane_runs", "Runs in each status now", ["status"]),)

    def read(self) -> list[Metric]:
        from controlplane.operations.selectors import runs_count_by_status

        family = GaugeMetricFamily(*self.families[0][:2], labels=["status"])
        for status, n in sorted(runs_count_by_status().items()):
            family.add_metric([status], n)
        return [family]


class BudgetCollector(BoundedCollector):
    name = "budgets"
    families = (
        ("edgeplane_team_budget_used_device_hours", ("Device-hours the team used in its current budget period "
                                                     "(all of its usage when it has no current budget)"), ["team"]),
        ("edgeplane_team_budget_limit_device_hours", "The team's budget for the current period (teams with one)",
         ["team"]),
    )

    def read(self) -> list[Metric]:
        from controlplane.operations.selectors import teams_budget_use

        used = GaugeMetricFamily(*self.families[0][:2], labels=["team"])
        limit = GaugeMetricFamily(*self.families[1][:2], labels=["team"])
        for row in teams_budget_use():
            used.add_metric([row.team], row.used_device_hours)
            if row.limit_device_hours is not None:
                limit.add_metric([row.team], row.limit_device_hours)
        return [used, limit]


def celery_queues() -> list[str]:
    """The queues tasks are sent to: the default one, the routed ones, and any declared."""
    from controlplane.celery import app

    names = {app.conf.task_default_queue or "celery"}
    for route in (app.conf.task_routes or {}).values() if isinstance(app.conf.task_routes, dict) else ():
        if isinstance(route, dict) and route.get("queue"):
            names.add(str(getattr(route["queue"], "name", route["queue"])))
    for queue in app.conf.task_queues or ():
        names.add(str(getattr(queue, "name", queue)))
    return sorted(names)


class QueueCollector(BoundedCollector):
    name = "queues"
    families = (("edgeplane_celery_queue_length", ("Messages waiting in each Celery queue (Redis: LLEN of the "
                                                   "queue's keys; filesystem broker: its message files)"), ["queue"]),)

    def read(self) -> list[Metric]:
        from kombu.exceptions import ChannelError

        from controlplane.operations.health import broker_connection, timeout_seconds

        family = GaugeMetricFamily(*self.families[0][:2], labels=["queue"])
        with broker_connection(timeout_seconds()) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_seconds())
            channel = conn.default_channel
            for queue in celery_queues():
                try:
                    # kombu's own count: Redis LLEN over the queue's priority keys, the filesystem
                    # transport's message files; passive: never creates the queue.
                    count = channel.queue_declare(queue=queue, passive=True).message_count
                except ChannelError:  # not declared yet (Redis: no key until a message arrives)
                    count = 0
                family.add_metric([queue], count)
        return [family]


class CollectorUp:
    """edgeplane_metrics_collector_up: 1 when the collector's last read worked, 0 when it failed or timed out."""

    def __init__(self, collectors: list[BoundedCollector]) -> None:
        self.collectors = collectors

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("edgeplane_metrics_collector_up", "Whether a scrape-time collector read its source",
                                labels=["collector"])

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("edgeplane_metrics_collector_up", "Whether a scrape-time collector read its source",
                                   labels=["collector"])
        for collector in self.collectors:
            family.add_metric([collector.name], 1.0 if BoundedCollector.status.get(collector.name) else 0.0)
        yield family


SCRAPE_COLLECTORS: list[BoundedCollector] = [RunsCollector(), BudgetCollector(), QueueCollector()]
_registered = threading.Lock()
_registered_once: list[bool] = []


def web_registry() -> CollectorRegistry:
    """What the web's /metrics answers: this process's metrics (or every process's, aggregated from
    PROMETHEUS_MULTIPROC_DIR) and the scrape-time collectors. Registered once per process."""
    if MULTIPROC_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()  # a fresh one per scrape, as prometheus_client's multiprocess mode wants
        multiprocess.MultiProcessCollector(registry)
        for collector in SCRAPE_COLLECTORS:
            registry.register(collector)  # type: ignore[arg-type]
        registry.register(CollectorUp(SCRAPE_COLLECTORS))  # type: ignore[arg-type]
        return registry
    with _registered:
        if not _registered_once:
            for collector in SCRAPE_COLLECTORS:
                REGISTRY.register(collector)  # type: ignore[arg-type]
            REGISTRY.register(CollectorUp(SCRAPE_COLLECTORS))  # type: ignore[arg-type]
            _registered_once.append(True)
    return REGISTRY


def process_registry() -> CollectorRegistry:
    """A worker's own metrics (no scrape-time collectors: the web serves those once)."""
    if MULTIPROC_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition(accept: str | None, registry_of: Callable[[], CollectorRegistry] = web_registry) -> tuple[bytes, str]:
    """The registry's samples in the format the scraper asked for (Prometheus text, or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry_of()), content_type


def multiproc_dir_reset(**_: Any) -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR before a server's processes start (gunicorn's on_starting, Celery's
    worker_init): the files of a previous server's processes would be summed in, a restarted
    container's /tmp included."""
    import shutil
    from pathlib import Path

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # read now: a server's config sets it
    if not path:
        return
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def process_dead(pid: int) -> None:
    """A server's process ended (gunicorn's child_exit, a Celery pool process's shutdown): its live
    gauges leave the sums; its counters stay counted."""
    if path := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def pool_process_shutdown(pid: int | None = None, **_: Any) -> None:
    """Receiver of Celery's worker_process_shutdown."""
    process_dead(pid or os.getpid())


def worker_metrics_serve(**_: Any) -> None:
    """Receiver of Celery's worker_ready (main process): serve the worker's counters on
    EDGEPLANE_WORKER_METRICS_PORT (unset: not served) at EDGEPLANE_WORKER_METRICS_ADDR
    (default 127.0.0.1; 0.0.0.0 for a scraper in another container)."""
    from django.conf import settings

    port = str(getattr(settings, "EDGEPLANE_WORKER_METRICS_PORT", "") or "")
    if not port:
        return
    import logging

    from prometheus_client import start_http_server

    addr = getattr(settings, "EDGEPLANE_WORKER_METRICS_ADDR", "") or "127.0.0.1"
    start_http_server(int(port), addr=addr, registry=process_registry())
    logging.getLogger(__name__).info("worker metrics on http://%s:%s/metrics", addr, port)
