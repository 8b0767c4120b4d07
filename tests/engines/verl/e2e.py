"""Real verl jobs on CPU for the end-to-end tests: ``python -m workers.engines.verl.train``.

Each job is what the launcher starts for a run with ``engine: verl, device: cpu``: verl 0.9.1's
own ``fit`` (agent loop, reward loop, replay buffer, FSDP2 actor on gloo, advantage, update,
weight sync, checkpoint, resume) with Edgeplane's trainer, on the tiny Llama the launcher
builds. Jobs report to the live control plane of the test (``reporting_env``). About a minute
each on 2 cores, most of it Ray's start-up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from workers.engines.verl.cpu.rollout import WEIGHT_SYNC_LOG

HERE = Path(__file__).resolve().parent
REWARDS = str(HERE / "scripted_reward.py")
JOB_TIMEOUT_S = 300
CPU_RUN = {"engine": "verl", "device": "cpu", "task": "add", "task_train_size": 16, "task_test_size": 2,
           "batch_size": 2, "group_size": 4, "minibatches": 1, "steps": 2, "checkpoint_every": 2,
           "eval_every": 0, "eval_k": 2, "eval_prompts": 2, "max_new_tokens": 4, "verifier": "numeric", "lr": 1e-3,
           "lr_warmup_steps": 0}


@dataclass
class Job:
    run_dir: Path
    attempt: str
    process: subprocess.Popen
    log_path: Path

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / f"verl-metrics-{self.attempt}.jsonl"

    def wait(self, timeout: float = JOB_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"verl job still running after {timeout} s; log tail:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL the job's process group (a crashed worker), Ray's processes included."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def metrics(self) -> list[dict]:
        """verl's own logged metrics, one dict per logged step (its file tracker)."""
        if not self.metrics_path.exists():
            return []
        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        return [row.get("data", row) for row in rows]

    def weight_updates(self) -> list[float]:
        """|delta weights| of each weight sync, as the transformers rollout logged it."""
        return [float(m) for m in re.findall(re.escape(WEIGHT_SYNC_LOG) + r" \d+: \d+ tensors, \|delta weights\| = "
                                             r"([0-9.e+-]+)", self.log())]


def start_job(run_dir: Path, selectors: dict, *, env: dict[str, str] | None = None, attempt: str = "attempt-1",
              overrides: tuple[str, ...] = (), **run: object) -> Job:
    """Plan a CPU run as the launcher does and start its job as a local process."""
    from workers.engines.config import RunConfig
    from workers.engines.verl.launch import VerlOptions, plan

    config = RunConfig.from_mapping({**CPU_RUN, **run, "selectors": selectors})
    options = VerlOptions(run_dir=str(run_dir), attempt_id=attempt, micro_batch_per_gpu=2,
                          extra_overrides=("+edgeplane.rollout_timeout_s=120", *overrides))
    launch = plan(config, options)
    log_path = run_dir / f"verl-{attempt}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(launch.argv, cwd=str(HERE.parents[2]),
                                   env={**os.environ, **launch.env, **(env or {})},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Job(run_dir, attempt, process, log_path)


def run_job(run_dir: Path, selectors: dict, **kwargs: object) -> Job:
    job = start_job(run_dir, selectors, **kwargs)  # type: ignore[arg-type]
    job.wait()
    return job


def reward(name: str) -> tuple[str, ...]:
    """Overrides that score rollouts with ``scripted_reward.<name>``."""
    return (f"reward.custom_reward_function.path={REWARDS}", f"reward.custom_reward_function.name={name}")


def wait_for(predicate, timeout: float, what: str, job: Job | None = None, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if job is not None and job.process.poll() is not None:
            raise AssertionError(f"the job ended (exit {job.process.returncode}) before {what}:\n{job.log_tail()}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f":\n{job.log_tail()}" if job else ""))
