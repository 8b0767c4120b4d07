# ruff: noqa: N999  (gunicorn.conf.py: the name gunicorn looks for; never imported as a module)
"""gunicorn's configuration for the web service (docker-compose.yml, the Dockerfile's CMD):

    gunicorn -c controlplane/gunicorn.conf.py controlplane.wsgi

with DJANGO_SETTINGS_MODULE=controlplane.settings_production. Read from the environment:
EDGEPLANE_WEB_BIND (default 0.0.0.0:8000), EDGEPLANE_WEB_WORKERS (processes; else WEB_CONCURRENCY,
the usual name; else 2 x CPUs + 1, at most 8), EDGEPLANE_WEB_THREADS (per process, default 4),
EDGEPLANE_WEB_TIMEOUT (seconds a request may take, default 60), PROMETHEUS_MULTIPROC_DIR (the
metrics of all worker processes, summed by /metrics; emptied here at start).
"""

from __future__ import annotations

import os

from controlplane.operations.logs import log_format, logging_config
from controlplane.operations.metrics import multiproc_dir_reset, process_dead


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"gunicorn.conf.py: {name}={raw!r} must be a whole number of at least 1")
    return int(raw)


bind = [os.environ.get("EDGEPLANE_WEB_BIND") or "0.0.0.0:8000"]
workers = _count("EDGEPLANE_WEB_WORKERS", _count("WEB_CONCURRENCY", min(8, 2 * (os.cpu_count() or 1) + 1)))
# Threads: a request waiting on Postgres does not hold a whole process.
threads = _count("EDGEPLANE_WEB_THREADS", 4)
worker_class = "gthread"
timeout = _count("EDGEPLANE_WEB_TIMEOUT", 60)
# On SIGTERM (docker stop, a deploy) requests in flight get this long to finish.
graceful_timeout = 30
keepalive = 5
# Load the app before forking: a broken setting stops the server at once, with its message.
preload_app = True
# Workers' heartbeat files in memory (/dev/shm), not on the container's overlay disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Logs to the container's output in the app's format (EDGEPLANE_LOG_FORMAT, JSON by default;
# controlplane/operations/logs.py): gunicorn's own lines and its access lines go through the same
# handler as the app's, so one parser reads the whole web log.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"'
logconfig_dict = logging_config(fmt=log_format(os.environ.get("EDGEPLANE_LOG_FORMAT")),
                                level=os.environ.get("EDGEPLANE_LOG_LEVEL", "WARNING").upper())
logconfig_dict["loggers"].update({name: {"handlers": [], "propagate": True, "level": "INFO"}
                                  for name in ("gunicorn.error", "gunicorn.access")})

# Forwarding headers are judged by the app alone (controlplane/proxy.py, EDGEPLANE_TRUSTED_PROXIES):
# gunicorn itself believes them from nobody, so the two can never disagree.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
# No control socket ($HOME/.gunicorn/gunicorn.ctl): nothing uses it, and two servers would share it.
control_socket_disable = True


def on_starting(server) -> None:
    """The metrics folder (PROMETHEUS_MULTIPROC_DIR) starts empty: no previous server's samples summed in."""
    multiproc_dir_reset()


def child_exit(server, worker) -> None:
    """A worker process ended: its live gauges leave /metrics' sums (prometheus_client's multiprocess mode)."""
    process_dead(worker.pid)
