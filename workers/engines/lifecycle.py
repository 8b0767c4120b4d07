"""How a run ends, the same for every engine: the device-hour cap, and each way of ending as a
final status with its reason.

An engine reports each finished step to the telemetry sink and hands the sink's answer to
``RunLifecycle.after_step``, which returns the control to obey at this step boundary: the
answer, or ``stop_budget`` once the run has used its ``max_device_hours`` (the cap wins over
any answer). When the engine's loop ends, ``ending`` turns the last stop (or none: every step
trained) into the run's final ``(status, reason)``; ``diverged`` and ``crashed`` give the
failures' reasons. The reasons are what the control plane shows on the run's page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from workers.record import Control, RunStatus

# The final status of a run stopped at a step boundary; a run that was never stopped succeeded.
STATUS_OF_STOP = {Control.CANCEL: RunStatus.CANCELLED, Control.STOP_BUDGET: RunStatus.BUDGET_STOPPED}


class Ending(NamedTuple):
    """A run's final status and the reason shown with it."""

    status: RunStatus
    reason: str


@dataclass
class RunLifecycle:
    """One run's cap and the last stop it was told (``control``: ``continue`` until then)."""

    max_device_hours: float = 0.0  # stop once this many device-hours are used (0 = no cap)
    control: Control = Control.CONTINUE  # the last stop obeyed: cancel or stop_budget

    def cap_reached(self, device_seconds: float) -> bool:
        """The run has used its device-hours: at exactly the cap it stops."""
        return bool(self.max_device_hours) and device_seconds >= self.max_device_hours * 3600

    def after_step(self, answer: Control, device_seconds: float) -> Control:
        """The control to obey at this step boundary: the sink's ``answer`` to the step, or
        ``stop_budget`` once the cap is reached (``device_seconds``: used so far, this step included)."""
        control = Control.STOP_BUDGET if self.cap_reached(device_seconds) else answer
        if control != Control.CONTINUE:
            self.control = control
        return control

    def ending(self, steps: int, device_seconds: float) -> Ending:
        """The run's end once its loop is over: stopped by the last control after ``steps``
        completed steps, else succeeded with every step trained."""
        status = STATUS_OF_STOP.get(self.control, RunStatus.SUCCEEDED)
        if self.control == Control.CANCEL:
            return Ending(status, f"cancelled on request after step {steps}")
        if self.control == Control.STOP_BUDGET:
            return Ending(status, f"compute budget reached after step {steps} "
                                  f"({device_seconds / 3600:.4f} device-hours)")
        return Ending(status, f"trained {steps} steps")

    @staticmethod
    def diverged(steps: int, error: BaseException, checkpoint: str | None) -> Ending:
        """Training stopped producing finite numbers after ``steps`` completed steps;
        ``checkpoint``: the name of the last good one kept, None when none was saved."""
        kept = checkpoint or "none (no checkpoint was saved yet)"
        return Ending(RunStatus.FAILED, f"training diverged after {steps} completed steps: {error}; "
                                        f"last good checkpoint kept: {kept}")

    @staticmethod
    def crashed(step: int, error: BaseException) -> Ending:
        """The engine raised ``error`` during step ``step``."""
        return Ending(RunStatus.FAILED, f"engine error at step {step}: {type(error).__name__}: {error}")
