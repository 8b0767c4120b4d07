"""The Celery app: configured from Django settings (CELERY_*); tasks found by autodiscovery in
each installed app's ``tasks`` module (controlplane/runs/tasks.py).

A worker with several processes (``--concurrency=2``, the prefork pool: make demo's) trains
that many runs at once; each process then gives torch its share of the CPUs, so two runs do
not fight over every core (a run's own ``cpu_threads`` still wins: the engine sets it)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("edgeplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # INSTALLED_APPS, through the Django fixup

# The worker's processes and its main process's id, read at its start (before the pool forks).
_worker = {"processes": 1, "main_pid": 0}


def cpu_count() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads(processes: int, cpus: int) -> int:
    """Torch threads for each of a worker's ``processes``: an even share of ``cpus``."""
    return max(1, cpus // max(processes, 1))


@signals.celeryd_init.connect
def _remember_the_worker(sender=None, instance=None, conf=None, options=None, **_):
    concurrency = (options or {}).get("concurrency") or (conf.worker_concurrency if conf is not None else None)
    _worker["processes"] = int(concurrency or cpu_count())  # Celery's default: one process per CPU
    _worker["main_pid"] = os.getpid()


@signals.worker_process_init.connect
def _share_the_cpus(**_):
    """In each process of a prefork pool: torch threads = CPUs // processes. The solo pool
    sends this signal from the worker's own process, which keeps torch's default."""
    if _worker["processes"] <= 1 or os.getpid() == _worker["main_pid"]:
        return
    import torch  # here, not at import: the web process never loads torch for this

    torch.set_num_threads(torch_threads(_worker["processes"], cpu_count()))
