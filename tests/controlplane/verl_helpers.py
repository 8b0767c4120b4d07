"""What the verl-run tests share: a small verl config, the overrides that decide how far the
real verl process gets on a machine without GPUs, and polling helpers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.runs.models import FINISHED, Run
from tests.processes import stop_group

# tests/engines/verl/test_wiring.py's SMALL, as a control-plane run config (the dataset is the run's).
SMALL = {"engine": "verl", "batch_size": 8, "group_size": 4, "minibatches": 2, "steps": 5, "checkpoint_every": 2,
         "eval_every": 0, "verifier": "numeric", "selectors": {"grpo": {}}}

# The real `python -m workers.engines.verl.train` on a machine without GPUs either fails verl's
# own config check or, once that passes, waits for GPUs forever (measured: alive after 5 min).
# These overrides (appended last, so they win over the launcher's) pick the outcome a test needs.
FAILS_VERL_VALIDATION = ("actor_rollout_ref.actor.ppo_micro_batch_size=null",
                         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null")
VERL_VALIDATION_MESSAGE = "Please set at least one of 'actor.ppo_micro_batch_size'"
WAITS_FOR_GPUS = ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
                  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
                  "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, *, every: float = 0.5,
             explain: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")


def finished(run_id: int) -> Run | None:
    run = Run.objects.get(pk=run_id)
    return run if run.status in FINISHED else None


@contextlib.contextmanager
def queue_worker(queue: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A real Celery worker consuming ``queue`` only (as docker-compose's gpu-worker does), its
    output in ``log``; stopped with SIGTERM (SIGKILL after 30 s) when the block ends."""
    root = Path(__file__).resolve().parents[2]
    with log.open("ab") as handle:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "-Q", queue,
             "--pool=solo", "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield worker
    finally:
        stop_group(worker)
