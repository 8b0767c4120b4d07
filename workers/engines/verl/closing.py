"""Closing a step and the run: the ledger, the step record, the control plane's answer.

``StepClosing`` is a mixin of ``trainer.EdgeplaneTrainer``. The trainer's ``step`` closes the
step's selection (``_close_selection``: the ledger records every group generated, before
verl's checkpoint of the step saves it); its ``on_step_end``, after verl's checkpoint and
weight sync (whose seconds the record then carries), reports the step (``_report_step``): the
step record (accounting, observations by stable prompt key, decisions) goes to the control
plane through the HTTP sink (``report.sink_from_env``), and a ``cancel`` or ``stop_budget``
answer, or the device-hour cap (``RunLifecycle``), is obeyed at this step boundary
(``_stop``): a checkpoint is saved and verl's loop ends. ``close_step`` does both at once.
The run's start and end (``report_start``, ``report_end``, called by the trainer's ``fit``) and
its evaluations are reported here too; ``report.py`` builds the records' parts.

verl hooks it overrides (verl's base class calls them by name):

- ``_validate``: verl's, then the evaluation record to the control plane.

Its state: ``sink``, ``lifecycle`` (``control``, ``max_device_hours``), ``gpus``,
``model_parameters``, ``device_seconds``, ``step_started``, ``step_metrics``, ``closing``
(closed in ``step``, reported in ``on_step_end``) and ``last_result``. It reads the step's
``work`` (``selecting.py``) and verl's ``config``, ``global_steps``, ``total_training_steps``,
``train_dataset`` and ``val_dataset``; ``_stop`` gives back the batch selected ahead
(``_abandon_ahead``) and saves through verl's ``_save_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from workers.engines.lifecycle import RunLifecycle
from workers.engines.verl import report
from workers.engines.verl.edgeplane_config import edgeplane_section, selection_methods
from workers.engines.verl.http_sink import HttpSink
from workers.engines.verl.selecting import StepWork
from workers.record import Control, StepRecord
from workers.selection.pipeline import StepResult, StepSelection

logger = logging.getLogger(__name__)


class StepClosing:
    """Closes and reports each step and the run (see the module docstring); a mixin of ``EdgeplaneTrainer``."""

    sink: HttpSink | None  # None: no control plane in the environment, nothing reported
    lifecycle: RunLifecycle  # the device-hour cap and how the run ends, as the embedded engine's
    gpus: int  # what wall seconds are multiplied by (device-seconds)
    model_parameters: int
    device_seconds: float
    step_started: float
    step_metrics: dict | None
    closing: tuple[StepResult, StepWork] | None  # closed in step(), reported in on_step_end
    last_result: StepResult | None

    def _setup_closing(self, config: Any) -> None:
        trainer = config.trainer
        section = edgeplane_section(config)
        self.step_started = 0.0
        self.step_metrics = None
        self.closing = None
        self.device_seconds = 0.0
        self.last_result = None
        self.gpus = int(trainer.nnodes) * int(trainer.n_gpus_per_node)
        self.lifecycle = RunLifecycle(max_device_hours=float(
            (section.get("max_device_hours", 0) if section is not None else 0) or 0))
        run_dir = os.environ.get("EDGEPLANE_RUN_DIR") or str(Path(str(trainer.default_local_dir)).parent)
        self.sink = report.sink_from_env(run_dir)
        self.model_parameters = report.count_parameters(str(config.actor_rollout_ref.model.path))

    def close_step(self, metrics: dict, timing_raw: dict) -> None:
        """Close and report the step at once (``step`` and ``on_step_end`` split the two)."""
        closing = self._close_selection(timing_raw)
        if closing is not None:
            self._report_step(closing, metrics, timing_raw)

    def _close_selection(self, timing_raw: dict) -> tuple[StepResult, StepWork] | None:
        """The step's ledger update, selector state and accounting (after verl's update)."""
        work = self.work
        if work is None:
            return None
        step = work.selection
        step.rollouts_effective = work.rollouts_effective
        result = step.close(seconds=report.phase_seconds(timing_raw, work.select_seconds, self.gpus),
                            parameters=self.model_parameters, forward_tokens_extra=work.forward_tokens_extra)
        self.work = None
        return result, work

    def _step_record(self, closing: tuple[StepResult, StepWork], metrics: dict,
                     timing_raw: dict) -> tuple[StepResult, StepRecord]:
        """The step's result with every phase's seconds (``timing_raw``: verl's timers and the
        step's wall time), and its record."""
        result, work = closing
        seconds = report.phase_seconds(timing_raw, work.select_seconds, self.gpus)
        result = dataclasses.replace(result, accounting=dataclasses.replace(result.accounting, seconds=seconds))
        total = self.device_seconds + result.accounting.device_seconds
        return result, StepRecord.from_result(result, train=self._train_summary(work.selection, result, metrics,
                                                                                total))

    def _stage_step(self, closing: tuple[StepResult, StepWork] | None, metrics: dict, timing_raw: dict) -> None:
        """Keep the closed step's record on disk (without the checkpoint and weight-sync
        seconds verl times next) until ``_report_step`` sends it: a job that dies after verl's
        checkpoint of this step resumes after it, and the next job reports the staged record."""
        if closing is not None and self.sink is not None:
            self.sink.stage(self._step_record(closing, metrics, timing_raw)[1])

    def _report_step(self, closing: tuple[StepResult, StepWork], metrics: dict, timing_raw: dict) -> None:
        """The step's record, with every phase's seconds, to the control plane; its answer is
        obeyed here."""
        result, record = self._step_record(closing, metrics, timing_raw)
        self.device_seconds += result.accounting.device_seconds
        metrics.update({f"edgeplane/{k}": v for k, v in result.accounting.to_record().items()
                        if isinstance(v, (int, float))})
        self.last_result = result
        for alert in result.alerts:
            logger.warning("step %d: %s", result.step, alert)
        answer = self.sink.step(record) if self.sink is not None else Control.CONTINUE
        control = self.lifecycle.after_step(answer, self.device_seconds)
        if control != Control.CONTINUE:
            self._stop(control)

    def _train_summary(self, step: StepSelection, result: StepResult, metrics: dict,
                       device_seconds_total: float) -> dict[str, Any]:
        summary = report.train_summary(metrics, device_seconds_total)
        rewards = [o.rewards for o in step.outcomes]
        generated = np.concatenate(rewards) if rewards else np.zeros(0)
        # Over every rollout generated this step (the embedded engine's definition), not only trained ones.
        summary["reward_mean"] = float(generated.mean()) if generated.size else 0.0
        acc = result.accounting
        summary["response_length_mean"] = acc.tokens_generated / max(acc.rollouts_generated, 1)
        return summary

    def _stop(self, control: Control) -> None:
        """Obey cancel / stop_budget at this step boundary: save, then let ``fit`` end."""
        self._abandon_ahead()
        # verl saved this step already if it was a save step (fit saves before on_step_end)
        save_freq = int(self.config.trainer.save_freq)
        saved = save_freq > 0 and (self.global_steps % save_freq == 0 or self.global_steps >= self.total_training_steps)
        if not saved:
            self._save_checkpoint()
        self.total_training_steps = self.global_steps  # fit's loop ends after this step
        logger.info("control plane answered %s after step %d: stopping", control, self.global_steps)

    def report_start(self) -> None:
        if self.sink is not None:
            self.sink.run_started(config={"engine": "verl", "methods": selection_methods(self.config)},
                                  model_parameters=self.model_parameters, dataset_size=len(self.train_dataset),
                                  resumed_from_step=self.global_steps or None)
            self.sink.report_staged()  # a step the job before closed but died before reporting

    def report_end(self, failure: BaseException | None = None) -> None:
        if self.sink is None:
            return
        if failure is not None:
            end = self.lifecycle.crashed(self.global_steps, failure)
        else:
            end = self.lifecycle.ending(min(self.global_steps, self.total_training_steps), self.device_seconds)
        self.sink.run_finished(status=end.status, reason=end.reason)

    @property
    def control(self) -> Control:
        """The last stop the run obeyed (cancel, stop_budget); continue until then."""
        return self.lifecycle.control

    @property
    def max_device_hours(self) -> float:
        return self.lifecycle.max_device_hours

    def _validate(self) -> dict[str, float]:
        metrics = super()._validate()
        record = report.evaluation_record(
            self.global_steps, metrics, k=int(self.config.actor_rollout_ref.rollout.val_kwargs.n),
            prompts=len(self.val_dataset))
        if record is not None and self.sink is not None:
            self.sink.evaluation(record)
        return metrics
