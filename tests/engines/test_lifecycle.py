"""How a run ends, for both engines: each way of ending gives its final status and reason,
and the device-hour cap stops the run at exactly max_device_hours."""

from __future__ import annotations

import pytest

from workers.engines.lifecycle import Ending, RunLifecycle
from workers.record import Control, RunStatus

HOUR = 3600.0


def test_a_run_that_trains_every_step_succeeds():
    lifecycle = RunLifecycle()
    for _ in range(3):
        assert lifecycle.after_step(Control.CONTINUE, device_seconds=10.0) == Control.CONTINUE
    assert lifecycle.ending(3, device_seconds=30.0) == (RunStatus.SUCCEEDED, "trained 3 steps")


def test_a_cancel_answer_is_obeyed_and_ends_the_run_cancelled():
    lifecycle = RunLifecycle(max_device_hours=1.0)
    assert lifecycle.after_step(Control.CANCEL, device_seconds=10.0) == Control.CANCEL
    assert lifecycle.control == Control.CANCEL
    assert lifecycle.ending(4, device_seconds=10.0) == (RunStatus.CANCELLED, "cancelled on request after step 4")


def test_a_budget_answer_ends_the_run_budget_stopped_with_the_device_hours_used():
    lifecycle = RunLifecycle()
    assert lifecycle.after_step(Control.STOP_BUDGET, device_seconds=90.0) == Control.STOP_BUDGET
    end = lifecycle.ending(2, device_seconds=90.0)
    assert end.status == RunStatus.BUDGET_STOPPED
    assert end.reason == "compute budget reached after step 2 (0.0250 device-hours)"


def test_the_cap_stops_the_run_at_exactly_max_device_hours_and_not_before():
    lifecycle = RunLifecycle(max_device_hours=0.5)
    assert not lifecycle.cap_reached(0.5 * HOUR - 1e-6)
    assert lifecycle.after_step(Control.CONTINUE, device_seconds=0.5 * HOUR - 1e-6) == Control.CONTINUE
    assert lifecycle.control == Control.CONTINUE
    assert lifecycle.cap_reached(0.5 * HOUR)
    assert lifecycle.after_step(Control.CONTINUE, device_seconds=0.5 * HOUR) == Control.STOP_BUDGET
    assert lifecycle.ending(7, device_seconds=0.5 * HOUR) == (
        RunStatus.BUDGET_STOPPED, "compute budget reached after step 7 (0.5000 device-hours)")


def test_the_cap_wins_over_a_cancel_answered_in_the_same_step():
    lifecycle = RunLifecycle(max_device_hours=1.0)
    assert lifecycle.after_step(Control.CANCEL, device_seconds=2 * HOUR) == Control.STOP_BUDGET
    assert lifecycle.ending(1, device_seconds=2 * HOUR).status == RunStatus.BUDGET_STOPPED


def test_no_cap_never_stops_the_run():
    lifecycle = RunLifecycle(max_device_hours=0.0)
    assert not lifecycle.cap_reached(1e12)
    assert lifecycle.after_step(Control.CONTINUE, device_seconds=1e12) == Control.CONTINUE


def test_a_stop_is_kept_when_a_later_step_answers_continue():
    lifecycle = RunLifecycle()
    lifecycle.after_step(Control.CANCEL, device_seconds=1.0)
    lifecycle.after_step(Control.CONTINUE, device_seconds=2.0)
    assert lifecycle.ending(2, device_seconds=2.0).status == RunStatus.CANCELLED


@pytest.mark.parametrize(("checkpoint", "kept"), [("step_000002", "step_000002"),
                                                  (None, "none (no checkpoint was saved yet)")])
def test_a_diverged_run_fails_naming_the_last_good_checkpoint(checkpoint, kept):
    end = RunLifecycle.diverged(3, ValueError("the policy's outputs are no longer finite numbers"), checkpoint)
    assert end == Ending(RunStatus.FAILED, "training diverged after 3 completed steps: the policy's outputs are "
                                           f"no longer finite numbers; last good checkpoint kept: {kept}")


def test_a_crashed_run_fails_naming_the_step_and_the_error():
    end = RunLifecycle().crashed(5, RuntimeError("rollouts did not finish within 20 s"))
    assert end == (RunStatus.FAILED, "engine error at step 5: RuntimeError: rollouts did not finish within 20 s")
    assert end.status is RunStatus.FAILED  # the telemetry enum itself, not a copy
