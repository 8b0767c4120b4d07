"""LZE (docs/algorithms.md §6): backward selection of the groups with the highest
learning-zone energy for the update, and optionally a forward pruner of prompts solved for
``t_prune`` consecutive epochs, with a share of the pruned pool replayed each epoch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from workers.selection import lze
from workers.selection.decisions import Action, Layer
from workers.selection.outcomes import GroupOutcome
from workers.selection.panels import Panel, Series
from workers.selection.params import MethodParams, SelectionConfigError, described
from workers.selection.selector import (
    EpochReport,
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
class LzeParams(MethodParams):
    method: ClassVar[str] = "lze"
    kappa: float = described("share of the batch's groups that enter the update", 0.4, bounds=(0.01, 1))
    min_ratio: float = described("lowest share of groups selected, whatever kappa", 0.3, bounds=(0, 1))
    momentum_weight: float = described("weight a of the pass-rate momentum", 0.3, bounds=(0, 1))
    momentum: str = described("abs: min(2|p - ema|, 1) (reference code); signed: p - ema (paper text)", "abs")
    d_init_min: float = described("lowest difficulty anchor max(1 - p0, d_init_min)", 0.05, bounds=(0, 1))
    # Up to 1e9: noise that swamps the energy, a random order (the rollout-savings bench's control).
    noise: float = described("Gumbel noise scale, as a share of the live energy range", 0.05, bounds=(0, 1e9))
    backward: bool = described("select the top-K groups for the update (backward selection)", True)
    warmup_epochs: int = described("epochs that train every live group before backward selection starts (0: "
                               "select from the first step, as the reference run script does)", 0, bounds=(0, 10000))
    prune: bool = described("prune prompts all-correct for t_prune consecutive epochs, and replay some", False)
    t_prune: int = described("consecutive all-correct epochs before a prompt is pruned", 2, bounds=(1, 10000))
    replay_ratio: float = described("share of the pruned pool replayed at each epoch start", 0.1, bounds=(0, 1))

    def check(self) -> None:
        self._require(0 < self.kappa <= 1, "kappa", f"must lie in (0, 1], got {self.kappa}")
        self._require(0 <= self.min_ratio <= 1, "min_ratio", f"must lie in [0, 1], got {self.min_ratio}")
        self._require(self.momentum in ("abs", "signed"), "momentum", f"must be abs or signed, got {self.momentum!r}")
        self._require(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")
        self._require(self.t_prune >= 1, "t_prune", f"must be >= 1, got {self.t_prune}")
        self._require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        self._require(0 <= self.replay_ratio <= 1, "replay_ratio", "must lie in [0, 1]")
        self._require(self.backward or self.prune, "backward", "with backward selection and the pruner both off, "
                      "LZE does nothing: set lze.backward = true, turn the pruner on (lze.prune = true), or drop lze")


class Lze(Selector[LzeParams]):
    name = "lze"
    label = "LZE"
    help = "Updates only on the groups with the highest learning-zone energy; optionally prunes solved prompts."
    layers = frozenset({Layer.PRE_ROLLOUT, Layer.UPDATE})
    Params = LzeParams
    reasons = MappingProxyType({
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
    })
    priority = 10  # the pruner screens before the history filters draw their keep probabilities
    panels = (
        Panel("energy", "Energy distribution at the newest step", view="lze_energy"),
        Panel("pool", "Selected share and pruned pool", (
            Series("pruned pool (prompts)", metric="lze/pruned_pool"),
            Series("replayed", decision="lze.replayed", style="bar"),
            Series("restored", decision="lze.restored", style="bar"),
            Series("selected share", metric="lze/selected_share", axis="right"))),
    )

    def active_layers(self) -> frozenset[Layer]:
        return frozenset({*([Layer.PRE_ROLLOUT] if self.params.prune else []),
                          *([Layer.UPDATE] if self.params.backward else [])})

    def composition_errors(self, pipeline: PipelineView) -> list[SelectionConfigError]:
        shaping = [s.name for s in pipeline.selectors.values() if s.uses_zero_variance]
        if not (self.params.backward and shaping):
            return []
        named = " and ".join(shaping)
        # The fix depends on the pruner: without it, LZE with backward selection off does nothing.
        fix = (f"set lze.backward = false (LZE keeps its pruner) or drop {named}" if self.params.prune else
               f"drop lze or {named}, or turn LZE's pruner on (lze.prune = true) and set lze.backward = false")
        return [SelectionConfigError(
            "lze.backward", f"LZE backward selection updates only on mixed groups, so {named} would shape "
            f"nothing: {fix}")]

    # -- forward pruner -----------------------------------------------------------------
    def screen(self, step: StepView, keys: list[str], slots: Ints, keep: Mask) -> Verdict:
        keep = keep.copy()
        ledger = self.pipeline.ledger
        replaying = set(self.state.get("replaying", []))
        pruned = ledger.column("pruned")[slots]
        streak = ledger.column("epoch_streak")[slots]
        decisions = []
        for i in np.flatnonzero(pruned & keep):
            if keys[i] in replaying:
                continue
            keep[i] = False
            decisions.append(self.decision(step.step, keys[i], Layer.PRE_ROLLOUT, "lze.skipped_pruned",
                                           {"streak": int(streak[i])}))
        return Verdict(keep=keep, decisions=tuple(decisions))

    def start_epoch(self, epoch: int) -> EpochReport:
        if not self.params.prune:
            return EpochReport()
        ledger = self.pipeline.ledger
        pool = np.flatnonzero(ledger.column("pruned"))
        count = lze.replay_count(pool.size, self.params.replay_ratio)
        if count == 0:
            return EpochReport()
        chosen = np.sort(self.pipeline.rng.choice(pool, size=count, replace=False))
        keys = [ledger.key_of(int(s)) for s in chosen]
        self.state["replaying"] = sorted(set(self.state.get("replaying", [])) | set(keys))
        step = self.pipeline.step
        return EpochReport(replay=tuple(keys), decisions=tuple(
            self.decision(step, key, Layer.PRE_ROLLOUT, "lze.replayed", {"pool": pool.size}) for key in keys))

    def end_epoch(self, epoch: int) -> EpochReport:
        if not self.params.prune:
            return EpochReport()
        ledger = self.pipeline.ledger
        seen = ledger.close_epoch(epoch)
        streak = ledger.column("epoch_streak")[seen]
        pruned = ledger.column("pruned")[seen]
        newly = seen[(streak >= self.params.t_prune) & ~pruned]
        ledger.set_pruned(newly, True)
        step = self.pipeline.step
        return EpochReport(decisions=tuple(
            self.decision(step, ledger.key_of(int(s)), Layer.PRE_ROLLOUT, "lze.pruned",
                          {"streak": int(ledger.column("epoch_streak")[s])}) for s in newly))

    def after_step(self, step: StepView) -> Report:
        replaying = set(self.state.get("replaying", []))
        if not replaying:
            return Report()
        ledger = self.pipeline.ledger
        decisions = []
        for outcome in step.outcomes:
            if outcome.key not in replaying:
                continue
            replaying.discard(outcome.key)
            p = outcome.pass_rate
            slot = ledger.slots([outcome.key])
            if p < 1.0:
                ledger.set_pruned(slot, False)
                decisions.append(self.decision(step.step, outcome.key, Layer.PRE_ROLLOUT, "lze.restored",
                                               {"pass_rate": p}))
            else:
                decisions.append(self.decision(step.step, outcome.key, Layer.PRE_ROLLOUT, "lze.still_solved",
                                               {"pass_rate": p}))
        self.state["replaying"] = sorted(replaying)
        return Report(decisions=tuple(decisions))

    # -- backward selection -------------------------------------------------------------
    def select_update(self, step: StepView, groups: Sequence[GroupOutcome]) -> Verdict:
        if not groups:
            return Verdict(keep=np.zeros(0, dtype=bool))
        return self.choose(step, np.array([g.pass_rate for g in groups]), [g.key for g in groups])

    def select_for_update(self, step: StepView, pass_rate: Floats, keys: list[str]) -> Mask:
        """Mask over the batch's groups: the top-K live groups by perturbed energy."""
        return self.choose(step, pass_rate, keys).keep

    def choose(self, step: StepView, pass_rate: Floats, keys: list[str]) -> Verdict:
        p = self.params
        ledger = self.pipeline.ledger
        slots = ledger.slots(keys)
        p0 = ledger.column("p0")[slots]
        ema = ledger.column("ema")[slots]
        p0 = np.where(np.isnan(p0), pass_rate, p0)
        ema = np.where(np.isnan(ema), p0, ema)
        energy = lze.energy(pass_rate, p0, ema, p.momentum_weight, p.d_init_min, p.momentum)
        live = (pass_rate > 0) & (pass_rate < 1)
        if step.epoch < p.warmup_epochs:  # warm-up epochs train on every live group
            chosen = live.copy()
            k = int(live.sum())
        else:
            chosen = lze.select(energy, live, p.kappa, p.min_ratio, p.noise, rng=step.rng)
            k = int(chosen.sum())
        order = np.argsort(-np.where(live, energy, -np.inf), kind="stable")
        rank = np.empty(len(keys), dtype=np.int64)
        rank[order] = np.arange(1, len(keys) + 1)
        decisions = []
        # Recorded at the post-rollout layer, where the audit trail has always shown them.
        for i, key in enumerate(keys):
            if not live[i]:
                decisions.append(self.decision(step.step, key, Layer.POST_ROLLOUT, "lze.zero_variance",
                                               {"pass_rate": float(pass_rate[i])}))
                continue
            decisions.append(self.decision(
                step.step, key, Layer.POST_ROLLOUT, "lze.selected" if chosen[i] else "lze.not_selected", {
                    "energy": float(energy[i]), "rank": int(rank[i]), "live": int(live.sum()), "k": k,
                }))
        return Verdict(keep=chosen, decisions=tuple(decisions), metrics={
            "lze/energy_mean": float(energy[live].mean()) if live.any() else 0.0,
            "lze/selected_share": float(chosen.sum() / len(keys)) if keys else 0.0,
        }, observed={"energy": dict(zip(keys, energy.tolist()))})

    def metrics(self) -> dict[str, float]:
        return {
            "lze/pruned_pool": float(self.pipeline.ledger.column("pruned").sum()),
            "lze/replaying": float(len(self.state.get("replaying", []))),
        }
