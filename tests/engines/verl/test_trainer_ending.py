"""The verl trainer ends its run through the shared lifecycle: the same final statuses and
reasons as the embedded engine (workers/engines/lifecycle.py).

The trainer is made without ``__init__`` (``object.__new__``) and given what ``report_end``
reads: the sink, the lifecycle, verl's step counters and the device-seconds used.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from workers.engines.lifecycle import RunLifecycle
from workers.engines.verl.trainer import EdgeplaneTrainer
from workers.record import Control, RunStatus


class FinishSink:
    def __init__(self) -> None:
        self.finished: dict[str, Any] | None = None

    def run_finished(self, *, status: RunStatus, reason: str) -> None:
        self.finished = {"status": status, "reason": reason}


def trainer_at(global_steps: int, total_training_steps: int, *, max_device_hours: float = 0.0,
               device_seconds: float = 0.0) -> EdgeplaneTrainer:
    trainer = object.__new__(EdgeplaneTrainer)
    trainer.sink = FinishSink()
    trainer.lifecycle = RunLifecycle(max_device_hours=max_device_hours)
    trainer.global_steps, trainer.total_training_steps = global_steps, total_training_steps
    trainer.device_seconds = device_seconds
    return trainer


def test_a_finished_fit_reports_the_steps_trained_never_more_than_planned():
    trainer = trainer_at(6, 5)  # verl's counter is one past the last step once fit's loop is over
    trainer.report_end()
    assert trainer.sink.finished == {"status": RunStatus.SUCCEEDED, "reason": "trained 5 steps"}


def test_a_cap_reached_reports_budget_stopped_with_the_device_hours():
    trainer = trainer_at(2, 5, max_device_hours=0.01, device_seconds=36.0)
    assert trainer.lifecycle.after_step(Control.CONTINUE, trainer.device_seconds) == Control.STOP_BUDGET
    assert trainer.control == Control.STOP_BUDGET and trainer.max_device_hours == 0.01
    trainer.report_end()
    assert trainer.sink.finished == {"status": RunStatus.BUDGET_STOPPED,
                                     "reason": "compute budget reached after step 2 (0.0100 device-hours)"}


def test_an_error_in_fit_fails_the_run_with_the_embedded_engine_s_wording():
    trainer = trainer_at(3, 5)
    trainer.report_end(failure=TimeoutError("rollouts did not finish within 20 s"))
    assert trainer.sink.finished == {"status": RunStatus.FAILED,
                                     "reason": "engine error at step 3: TimeoutError: "
                                               "rollouts did not finish within 20 s"}
