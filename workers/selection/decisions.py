"""Decision records (docs/algorithms.md §8): every prompt a method acts on yields one.

A record holds the action, a machine reason code, the numbers behind it, and a one-line
human reason rendered from the code's template and those numbers, so the words and the
data can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Layer(StrEnum):
    """Where in a step a method acts (docs/algorithms.md, the table before §0). Decision records
    store the value; UPDATE (the choice of the groups that enter the update) is dispatched on
    its own, and its decisions keep the post_rollout layer the audit trail has always shown."""

    PRE_ROLLOUT = "pre_rollout"
    ALLOCATION = "allocation"
    POST_ROLLOUT = "post_rollout"
    UPDATE = "update"
    ADVANTAGE = "advantage"


class Action(StrEnum):
    KEPT = "kept"
    SKIPPED = "skipped"
    PRUNED = "pruned"
    REPLAYED = "replayed"
    RESTORED = "restored"
    ALLOCATED = "allocated"
    SELECTED = "selected"
    DROPPED = "dropped"
    SHAPED = "shaped"


# reason code -> (action, template over the record's scores). These are the pipeline's own:
# the uniform audit draw and the zero-variance post-filter (docs/algorithms.md §1, whichever
# method owns it). Each method declares its own reasons (``Selector.reasons``); registering
# the method adds them here.
REASONS: dict[str, tuple[Action, str]] = {
    "audit.uniform": (Action.KEPT, ("kept unscreened as a uniform audit draw ({share:.0%} of candidates): it "
                                     "measures the mixed-group rate that savings against dynamic sampling use")),
    "dapo.all_correct": (
        Action.DROPPED,
        "dropped by DAPO dynamic sampling: all {group_size:.0f} rollouts correct, no advantage signal",
    ),
    "dapo.all_wrong": (
        Action.DROPPED,
        "dropped by DAPO dynamic sampling: all {group_size:.0f} rollouts wrong, no advantage signal",
    ),
    "dapo.surplus": (
        Action.DROPPED,
        "dropped by DAPO dynamic sampling: the batch already held {batch:.0f} mixed groups",
    ),
}


@dataclass(frozen=True, slots=True)
class Decision:
    step: int
    prompt_key: str
    layer: Layer
    method: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown decision reason {self.reason!r}")

    @property
    def action(self) -> Action:
        return REASONS[self.reason][0]

    @property
    def message(self) -> str:
        return REASONS[self.reason][1].format(**self.scores)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready form, the shape engines send through the telemetry sink."""
        return {
            "step": self.step,
            "prompt_key": self.prompt_key,
            "layer": str(self.layer),
            "method": self.method,
            "action": str(self.action),
            "reason": self.reason,
            "scores": {name: float(value) for name, value in self.scores.items()},
            "message": self.message,
        }
