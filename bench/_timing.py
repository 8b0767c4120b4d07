"""Small helpers shared by the benchmarks: median timing, a team to run under, and a results file."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def times_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn``, each timed alone, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], Any], repeats: int = 21, warmup: int = 3) -> float:
    return statistics.median(times_ms(fn, repeats, warmup))


def summary_ms(times: list[float]) -> dict[str, float]:
    """Median, min and max of timings in ms, and how many: a figure with its spread."""
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": len(times)}


def django_on_postgres() -> None:
    """Django set up on the scratch Postgres that DATABASE_URL names, migrated; without one, exit
    saying so."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("error: set DATABASE_URL to a scratch Postgres database (see the docstring)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# The server settings a database bench reports beside its figures (what the figures depend on).
PG_SHOWN = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "wal_buffers",
            "max_wal_size", "checkpoint_timeout", "work_mem", "max_connections", "max_locks_per_transaction")


def bench_team(label: str) -> tuple[Any, Any]:
    """A new team (its owner named ``label`` plus a unique suffix) and a one-prompt dataset of its
    own: what a bench's runs hang on. Django must be set up (``django_on_postgres``)."""
    from controlplane.accounts.services import team_create
    from controlplane.datasets.services import dataset_store
    from workers.problems.dataset import PromptRecord

    unique = f"{label}-{time.time_ns()}"
    team = team_create(name=unique, owner_username=unique)
    dataset = dataset_store(team=team, name=unique, filename="bench", content_hash="0" * 64,
                            records=[PromptRecord(key="bench:0", prompt="1+1=", ground_truth="2", data_source="bench",
                                                  index=0, difficulty="", split="train", extra_info={})])
    return team, dataset


def postgres_settings() -> dict[str, str]:
    """PG_SHOWN as the server of Django's default connection reports them (SHOW: "2GB", "on")."""
    from django.db import connection

    shown = {}
    with connection.cursor() as cursor:
        for name in PG_SHOWN:
            cursor.execute(f"SHOW {name}")
            shown[name] = cursor.fetchone()[0]
    return shown


def machine() -> dict[str, Any]:
    import numpy

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "processor": platform.processor() or platform.machine(),
    }


def json_safe(value: Any) -> Any:
    """NaN and infinity as the strings "NaN" / "Infinity" in a results file (JSON has no such
    numbers; --reanalyse reads them back with float()). The telemetry record's convention is
    different: ``workers.record.finite``, null."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return value


def write_results(name: str, figures: dict[str, Any], directory: Path | None = None) -> Path:
    directory = directory or RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    payload = {"benchmark": name, "at": datetime.now(UTC).isoformat(), "machine": machine(), **figures}
    path.write_text(dumps_compact(payload) + "\n")
    return path


def dumps_compact(value: Any, indent: int = 0) -> str:
    """JSON indented by object, with lists of numbers and flat records on one line: readable in a
    diff, and a results file with per-evaluation series stays small (no file over 1 MB is
    committed; tests/test_repository.py checks). Floats keep 7 significant digits: more
    than any measured figure here carries."""
    pad, inner = " " * indent, " " * (indent + 2)
    flat = isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values())
    if flat:  # a record of figures: one line
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k))}: {dumps_compact(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + dumps_compact(v, indent + 2) for v in value) + "\n" + pad + "]"
    if isinstance(value, list):
        return "[" + ", ".join(dumps_compact(v) for v in value) + "]"
    if isinstance(value, float) and math.isfinite(value):
        return json.dumps(float(f"{value:.7g}"))
    return json.dumps(value)
