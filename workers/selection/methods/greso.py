"""GRESO (docs/algorithms.md §2): skip prompts whose recent visits were all-correct or
all-wrong, with a keep probability a controller steers; optionally the zero-variance
post-filter with GRESO's refill sizing.

``HistoryFilter`` is the part HIVE's stage 1 shares (docs/algorithms.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, TypeVar

import numpy as np

from workers.selection import greso
from workers.selection.decisions import Action, Layer
from workers.selection.panels import Panel, Series
from workers.selection.params import MethodParams, SelectionConfigError, described
from workers.selection.selector import (
    Floats,
    Ints,
    Mask,
    PipelineView,
    Report,
    Selector,
    StepView,
    Verdict,
)


@dataclass(frozen=True)
class GresoParams(MethodParams):
    method: ClassVar[str] = "greso"
    p_easy: float = described("starting keep-probability base for prompts solved on every recent visit", 0.5,
                              bounds=(0, 1))
    p_hard: float = described("starting keep-probability base for prompts failed on every recent visit", 0.5,
                              bounds=(0, 1))
    floor: float = described("lowest keep probability, so no prompt is excluded for good", 0.01, bounds=(0, 1))
    target_easy: float = described("share of all-correct groups the controller aims for", 0.25 / 3, bounds=(0, 1))
    target_hard: float = described("share of all-wrong groups the controller aims for", 2 * 0.25 / 3, bounds=(0, 1))
    rollout_batch_factor: float = described("largest rollout batch per round, as a multiple of B", 3.0, bounds=(1, 64))
    min_rollout_batch: int = described("smallest rollout batch per refill round", 64, bounds=(1, 65536))
    max_gen_batches: int = described("rollout rounds per step before training on what was kept (0 = no limit)", 10,
                                     bounds=(0, 1000))
    post_filter: str = described("drop zero-variance groups after rollout: auto (on unless rlzvp), on, off", "auto")

    def check(self) -> None:
        for name in ("p_easy", "p_hard", "floor", "target_easy", "target_hard"):
            value = getattr(self, name)
            self._require(0 <= value <= 1, name, f"must lie in [0, 1], got {value}")
        self._require(self.rollout_batch_factor >= 1, "rollout_batch_factor", "must be >= 1")
        self._require(self.min_rollout_batch >= 1, "min_rollout_batch", "must be >= 1")
        self._require(self.max_gen_batches >= 0, "max_gen_batches", "must be >= 0")
        self._require(self.post_filter in ("auto", "on", "off"), "post_filter", "must be auto, on or off")


GP = TypeVar("GP", bound=GresoParams)
_EASY = "all-correct on the last {streak:.0f} visit(s)"
_HARD = "all-wrong on the last {streak:.0f} visit(s)"
_DRAW = "keep probability {keep_probability:.3f}, draw {draw:.3f}"



class HistoryFilter(Selector[GP]):
    """Pre-rollout filter from each prompt's trailing all-correct / all-wrong visits."""

    layers = frozenset({Layer.PRE_ROLLOUT})
    roles = frozenset({"history filter"})

    def controller(self) -> greso.Controller:
        p, state = self.params, self.state
        return greso.Controller(
            p_easy=state.get("p_easy", p.p_easy),
            p_hard=state.get("p_hard", p.p_hard),
            alpha_easy=p.target_easy,
            alpha_hard=p.target_hard,
        )

    def history_scores(self, slots: Ints) -> dict[str, Floats]:
        ledger = self.pipeline.ledger
        control = self.controller()
        easy = ledger.column("trailing_easy")[slots]
        hard = ledger.column("trailing_hard")[slots]
        return {
            "easy": easy,
            "hard": hard,
            "visits": ledger.column("visits")[slots],
            "pass_rate": ledger.column("last_pass_rate")[slots],
            "s_rew": greso.keep_probability(easy, hard, control.p_easy, control.p_hard, self.params.floor),
        }

    def screen(self, step: StepView, keys: list[str], slots: Ints, keep: Mask) -> Verdict:
        keep = keep.copy()
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return Verdict(keep=keep)
        scores = self.history_scores(slots[idx])
        keep_probability = self.keep_probability(scores, slots[idx])
        draw = step.rng.random(idx.size)
        kept = draw < keep_probability
        keep[idx[~kept]] = False
        report = self.record(step, [keys[i] for i in idx], scores, keep_probability, draw, kept)
        return Verdict(keep=keep, decisions=report.decisions, added=report.added)

    def keep_probability(self, scores: dict[str, Floats], slots: Ints) -> Floats:
        return scores["s_rew"]

    def record(self, step: StepView, keys: list[str], scores: dict[str, Floats],
               keep_probability: Floats, draw: Floats, kept: Mask) -> Report:
        decisions = []
        for i, key in enumerate(keys):
            easy, hard = int(scores["easy"][i]), int(scores["hard"][i])
            numbers: dict[str, float]
            if easy:
                reason, numbers = ("easy_kept" if kept[i] else "easy_skipped"), {"streak": easy}
            elif hard:
                reason, numbers = ("hard_kept" if kept[i] else "hard_skipped"), {"streak": hard}
            elif scores["visits"][i] == 0:
                reason, numbers = "unseen", {}
            else:
                reason, numbers = "mixed", {"pass_rate": float(scores["pass_rate"][i])}
            numbers.update(keep_probability=float(keep_probability[i]), draw=float(draw[i]))
            decisions.append(self.decision(step.step, key, Layer.PRE_ROLLOUT, "greso." + reason, numbers))
        return Report(decisions=tuple(decisions))

    def after_step(self, step: StepView) -> Report:
        # The controller starts after the first epoch, once every prompt has history.
        if step.epoch < 1 or not step.groups_generated:
            return Report()
        control = self.controller()
        n = step.groups_generated
        control.update(step.groups_all_correct / n, step.groups_all_wrong / n)
        self.state.update(p_easy=control.p_easy, p_hard=control.p_hard)
        return Report()

    def metrics(self) -> dict[str, float]:
        control = self.controller()
        return {f"{self.name}/p_easy": control.p_easy, f"{self.name}/p_hard": control.p_hard}

    # -- the optional post-filter -------------------------------------------------------
    def runs_post_filter(self, pipeline: PipelineView) -> bool:
        mode = self.params.post_filter
        return mode == "on" or (mode == "auto" and not pipeline.advantage.uses_zero_variance)

    def composition_errors(self, pipeline: PipelineView) -> list[SelectionConfigError]:
        errors = []
        field = f"{self.name}.post_filter"
        mode = self.params.post_filter
        shaping = [s.name for s in pipeline.selectors.values() if s.uses_zero_variance]
        if mode == "on" and shaping:
            errors.append(SelectionConfigError(field, "the zero-variance post-filter would drop the groups "
                                                      f"{shaping[0]} shapes: set it to auto or off"))
        filters = [s.name for s in pipeline.selectors.values() if Layer.POST_ROLLOUT in s.active_layers()]
        if mode == "off" and filters:
            errors.append(SelectionConfigError(field, f"{filters[0]} is the post-filter: remove {filters[0]} or set "
                                                      f"{self.name}.post_filter to auto"))
        return errors

    def round_size(self, missing: int) -> int:
        p, batch = self.params, self.pipeline.batch_size
        zv_rate = float(self.state.get("zero_variance_rate", 0.0))
        # The refill floor (64 in the paper, for B in the hundreds) never exceeds B.
        return greso.next_rollout_batch(missing, zv_rate, math.ceil(p.rollout_batch_factor * batch),
                                        min(p.min_rollout_batch, batch))

    def max_rounds(self) -> int:
        return self.params.max_gen_batches

    def round_factor(self) -> float:
        return self.params.rollout_batch_factor

    def after_round(self, zero_variance: int, groups: int) -> None:
        if groups:
            self.state["zero_variance_rate"] = zero_variance / groups


class Greso(HistoryFilter[GresoParams]):
    name = "greso"
    label = "GRESO"
    help = "Skips prompts that were solved (or failed) on every recent visit, with a keep probability."
    Params = GresoParams
    reasons = MappingProxyType({
        "greso.unseen": (Action.KEPT, "kept by GRESO: never rolled out before"),
        "greso.mixed": (Action.KEPT, "kept by GRESO: last visit had mixed outcomes (pass rate {pass_rate:.2f})"),
        "greso.easy_kept": (Action.KEPT, f"kept by GRESO: {_EASY}, but {_DRAW}"),
        "greso.hard_kept": (Action.KEPT, f"kept by GRESO: {_HARD}, but {_DRAW}"),
        "greso.easy_skipped": (Action.SKIPPED, f"skipped by GRESO: {_EASY}; {_DRAW}"),
        "greso.hard_skipped": (Action.SKIPPED, f"skipped by GRESO: {_HARD}; {_DRAW}"),
    })
    panels = (Panel("bases", "Keep-probability bases", (
        Series("p_easy (solved prompts)", metric="greso/p_easy"),
        Series("p_hard (failed prompts)", metric="greso/p_hard")), unit="share"),)
