"""What the verl trainer tells the control plane: the sink, and verl's metrics in our names.

The step record is the embedded engine's (``workers.record.StepRecord.from_result``:
accounting, per-prompt observations keyed by stable key, decisions), with its train stats
(``summary.train``) read from verl's metric names. Phase seconds are device-seconds (wall seconds
x the job's GPUs): budgets are charged in device-hours, and a phase on 16 GPUs costs 16 times its
wall time.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workers.engines.verl.http_sink import HttpSink
from workers.record import RecordError, finite
from workers.selection.accounting import PHASES

log = logging.getLogger(__name__)

ENV_URL, ENV_RUN, ENV_TOKEN, ENV_ATTEMPT = (
    "EDGEPLANE_CONTROL_URL", "EDGEPLANE_RUN_ID", "EDGEPLANE_RUN_TOKEN", "EDGEPLANE_ATTEMPT")
# A Ray job's env_vars are shown on the Ray dashboard: there the token comes as a file (mode 0600).
ENV_TOKEN_FILE = "EDGEPLANE_RUN_TOKEN_FILE"

# summary.train field <- verl metric (trainer_base._compute_metrics, _update_actor, _compute_old_log_prob)
TRAIN_METRICS = {
    "reward_mean": "critic/score/mean",
    "response_length_mean": "response_length/mean",
    "loss": "actor/pg_loss",
    "grad_norm": "actor/grad_norm",
    "clip_fraction": "actor/pg_clipfrac",
    "entropy_mean": "actor/entropy",
    "approx_kl": "actor/ppo_kl",
}
# The phases a verl step reports, in chart order: the pipeline's four, then the checkpoint
# verl saves inside its step timer and the rest of that timer ("other").
STEP_PHASES = (*PHASES, "checkpoint", "other")
# our phase <- verl timers (marked_timer names in trainer_base.fit / _step_once)
VERL_TIMERS = {
    "generate": ("gen",),
    "reward": ("reward",),
    "update": ("old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights"),
    "checkpoint": ("save_checkpoint",),
}


def sink_from_env(run_dir: str | Path, environ: Mapping[str, str] = os.environ) -> HttpSink | None:
    """The control plane's sink when the job was launched by it; None for a job started by hand.

    A job with some of the variables but not all is misconfigured: refuse it rather than
    train unreported.
    """
    token = environ.get(ENV_TOKEN) or ""
    if not token and environ.get(ENV_TOKEN_FILE):
        token = Path(environ[ENV_TOKEN_FILE]).read_text().strip()
    values = {ENV_URL: environ.get(ENV_URL), ENV_RUN: environ.get(ENV_RUN), ENV_TOKEN: token}
    if not any(values.values()):
        log.warning("no %s / %s / %s: this job reports to no control plane", *values)
        return None
    missing = [n for n, v in values.items() if not v]
    if missing:
        raise ValueError(f"telemetry is half configured: {', '.join(missing)} missing (set all of "
                         f"{', '.join(values)} ({ENV_TOKEN} or {ENV_TOKEN_FILE}), or none)")
    attempt = environ.get(ENV_ATTEMPT)
    return HttpSink(base_url=environ[ENV_URL], run_id=int(environ[ENV_RUN]), token=token,
                    run_dir=run_dir, attempt=int(attempt) if attempt else None)


def count_parameters(model_path: str) -> int:
    """Parameters of the Hugging Face model at ``model_path``, counted on the meta device (no
    weights loaded; the driver holds no model). 0, with a warning, when it cannot be read:
    the step's FLOPs estimates are then 0 too."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, ImportError) as exc:  # unreadable or unknown: no FLOPs, go on
        log.warning("cannot count the parameters of %s (%s): FLOPs estimates will be 0", model_path, exc)
        return 0
    return int(sum(p.numel() for p in model.parameters()))


def _number(value: Any) -> float | None:
    """A verl metric as the record's number (``workers.record.finite``); None when absent or not a number."""
    try:
        return finite(value)
    except (RecordError, TypeError, ValueError):
        return None


def train_summary(metrics: Mapping[str, Any], device_seconds_total: float) -> dict[str, Any]:
    summary: dict[str, Any] = {ours: _number(metrics.get(theirs)) for ours, theirs in TRAIN_METRICS.items()}
    summary["device_seconds_total"] = device_seconds_total
    return summary


def phase_seconds(timing_raw: Mapping[str, float], select_seconds: float, gpus: int) -> dict[str, float]:
    """Device-seconds per phase; ``other`` is the rest of verl's step timer."""
    seconds = {"select": select_seconds}
    for phase, timers in VERL_TIMERS.items():
        seconds[phase] = sum(float(timing_raw.get(t, 0.0)) for t in timers)
    step_wall = float(timing_raw.get("step", 0.0))
    seconds["other"] = max(0.0, step_wall - sum(seconds.values()))
    return {k: v * gpus for k, v in seconds.items()}


_VAL = re.compile(r"^val-core/(?P<source>.+)/(?P<var>[^/]+)/(?P<stat>mean|best)@(?P<n>\d+)(?:/mean)?$")


def evaluation_record(step: int, metrics: Mapping[str, Any], *, k: int, prompts: int) -> dict[str, Any] | None:
    """verl's validation metrics as our evaluation record; None when the step did not validate.

    pass@1 is the mean reward over the k samples (``val-core/<source>/reward/mean@k``),
    pass@k the best-of-k (``.../reward/best@k/mean``), averaged over data sources.
    """
    mean, best = [], []
    for name, value in metrics.items():
        match = _VAL.match(name)
        if not match or match["var"] not in ("reward", "acc") or _number(value) is None:
            continue
        if match["stat"] == "mean" and int(match["n"]) == k:
            mean.append(float(value))
        elif match["stat"] == "best" and int(match["n"]) == k:
            best.append(float(value))
    if not mean:
        return None
    pass_at_1 = sum(mean) / len(mean)
    return {"step": step, "k": k, "prompts": prompts, "pass_at_1": pass_at_1,
            "pass_at_k": sum(best) / len(best) if best else pass_at_1, "by_difficulty": {},
            "seconds": float(metrics.get("timing_s/testing", 0.0) or 0.0)}
