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


_EASY = "all-correct on the last {streak:.0f} visit(s)"
_HARD = "all-wrong on the last {streak:.0f} visit(s)"
_DRAW = "keep probability {keep_probability:.3f}, draw {draw:.3f}"
_STAGE1 = "s_rew {s_rew:.3f}, s_ent {s_ent:.3f}, keep probability {keep_probability:.3f}, draw {draw:.3f}"

# reason code -> (action, template over the record's scores)
REASONS: dict[str, tuple[Action, str]] = {
    "audit.uniform": (Action.KEPT, ("kept unscreened as a uniform audit draw ({share:.0%} of candidates): it "
                                     "measures the mixed-group rate that savings against dynamic sampling use")),
    "greso.unseen": (Action.KEPT, "kept by GRESO: never rolled out before"),
    "greso.mixed": (Action.KEPT, "kept by GRESO: last visit had mixed outcomes (pass rate {pass_rate:.2f})"),
    "greso.easy_kept": (Action.KEPT, f"kept by GRESO: {_EASY}, but {_DRAW}"),
    "greso.hard_kept": (Action.KEPT, f"kept by GRESO: {_HARD}, but {_DRAW}"),
    "greso.easy_skipped": (Action.SKIPPED, f"skipped by GRESO: {_EASY}; {_DRAW}"),
    "greso.hard_skipped": (Action.SKIPPED, f"skipped by GRESO: {_HARD}; {_DRAW}"),
    "hive.stage1_kept": (Action.KEPT, f"kept by HIVE stage 1: {_STAGE1}"),
    "hive.stage1_skipped": (Action.SKIPPED, f"skipped by HIVE stage 1: {_STAGE1}"),
    "hive.stage2_kept": (
        Action.KEPT,
        "kept by HIVE stage 2: prompt entropy {entropy:.3f} >= median {threshold:.3f} of {candidates:.0f} candidates",
    ),
    "hive.stage2_skipped": (
        Action.SKIPPED,
        "skipped by HIVE stage 2: prompt entropy {entropy:.3f} < median {threshold:.3f} of {candidates:.0f} candidates",
    ),
    "hive.band_kept": (
        Action.KEPT,
        ("kept by HIVE stage 2: prompt entropy {entropy:.3f} inside the band [{lower:.3f}, {upper:.3f}] "
         "of {candidates:.0f} candidates"),
    ),
    "hive.band_skipped": (
        Action.SKIPPED,
        ("skipped by HIVE stage 2: prompt entropy {entropy:.3f} outside the band [{lower:.3f}, {upper:.3f}] "
         "of {candidates:.0f} candidates"),
    ),
    "hora.allocated": (
        Action.ALLOCATED,
        ("allocated by HORA: {successes:.0f}/{probe:.0f} probe hits, posterior mean {posterior_mean:.3f}, "
         "{extra:.0f} extra rollouts (group of {group_size:.0f})"),
    ),
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
    "lze.selected": (
        Action.SELECTED,
        "selected by LZE: energy {energy:.3f}, rank {rank:.0f} of {live:.0f} live groups, top {k:.0f} kept",
    ),
    "lze.not_selected": (
        Action.DROPPED,
        ("left out of the update by LZE: energy {energy:.3f}, rank {rank:.0f} of {live:.0f} live groups, "
         "top {k:.0f} kept"),
    ),
    "lze.zero_variance": (
        Action.DROPPED,
        "left out of the update by LZE: pass rate {pass_rate:.2f}, outside the learning zone",
    ),
    "lze.pruned": (
        Action.PRUNED,
        "pruned by LZE: all-correct at the end of {streak:.0f} consecutive epochs",
    ),
    "lze.skipped_pruned": (
        Action.SKIPPED,
        "skipped by LZE: in the pruned pool (all-correct for {streak:.0f} consecutive epochs)",
    ),
    "lze.replayed": (
        Action.REPLAYED,
        "replayed by LZE: drawn from the pruned pool of {pool:.0f} prompts to check for forgetting",
    ),
    "lze.restored": (
        Action.RESTORED,
        "restored by LZE: replay pass rate {pass_rate:.2f} < 1, back in the active pool",
    ),
    "lze.still_solved": (
        Action.PRUNED,
        "kept pruned by LZE: replay pass rate {pass_rate:.2f}, still solved",
    ),
    "rlzvp.all_correct": (
        Action.SHAPED,
        ("shaped by RL-ZVP: all {group_size:.0f} rollouts correct, advantage alpha x token entropy "
         "(mean {mean_advantage:.4f})"),
    ),
    "rlzvp.all_wrong": (
        Action.SHAPED,
        ("shaped by RL-ZVP: all {group_size:.0f} rollouts wrong, advantage -alpha x (max entropy - token "
         "entropy) (mean {mean_advantage:.4f})"),
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
