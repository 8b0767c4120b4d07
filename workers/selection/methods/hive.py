"""HIVE (docs/algorithms.md §3): stage 1 screens from history like GRESO, blending in the
prompt's response-entropy history; stage 2 gathers a pool of stage-1 survivors and keeps
those whose prompt entropy under the current policy passes the gate (median or band).

The pool is HIVE's: ``pool_size`` says how many survivors to gather before ``gate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from workers.selection import hive
from workers.selection.decisions import Action, Layer
from workers.selection.methods.greso import GresoParams, HistoryFilter
from workers.selection.panels import Panel, Series
from workers.selection.params import described
from workers.selection.selector import (
    Conflict,
    Floats,
    Ints,
    Mask,
    PromptEntropyFn,
    Report,
    StepView,
    Verdict,
)

_STAGE1 = "s_rew {s_rew:.3f}, s_ent {s_ent:.3f}, keep probability {keep_probability:.3f}, draw {draw:.3f}"


@dataclass(frozen=True)
class HiveParams(GresoParams):
    method: ClassVar[str] = "hive"
    lam: float = described("stage-1 weight of the GRESO score against the entropy-history score (1.0 = GRESO)", 1.0,
                           bounds=(0, 1))
    gate: str = described("stage-2 gate: median (keep V >= median) or band (drop top k_off, keep next k_keep)",
                          "median")
    k_off: float = described("band gate: share of highest-entropy candidates dropped", 0.25, bounds=(0, 0.99))
    k_keep: float = described("band gate: share of candidates kept after those", 0.5, bounds=(0.01, 1))
    pool_factor: float = described("stage-1 survivors gathered before stage 2, as a multiple of the prompts "
                                   "needed", 1.5, bounds=(1, 64))

    def check(self) -> None:
        super().check()
        self._require(0 <= self.lam <= 1, "lam", f"must lie in [0, 1], got {self.lam}")
        self._require(self.gate in ("median", "band"), "gate", f"must be median or band, got {self.gate!r}")
        self._require(
            0 <= self.k_off < 1 and 0 < self.k_keep <= 1 and self.k_off + self.k_keep <= 1,
            "k_off",
            # k_off and k_keep only act with the band gate: say so when this run's gate is another
            f"the band gate drops the top k_off and keeps the next k_keep, so k_off + k_keep must be <= 1; got "
            f"{self.k_off} + {self.k_keep}: lower one of them"
            + ("" if self.gate == "band" else f" (they act only with gate = band; this run's gate is {self.gate})"),
        )
        self._require(self.pool_factor >= 1, "pool_factor", f"must be >= 1, got {self.pool_factor}")


class Hive(HistoryFilter[HiveParams]):
    name = "hive"
    label = "HIVE"
    help = ("Stage 1 skips prompts by history like GRESO; stage 2 keeps those whose prompt entropy "
            "under the current model is at least the median.")
    Params = HiveParams
    gathers = True
    reasons = MappingProxyType({
        "hive.stage1_kept": (Action.KEPT, f"kept by HIVE stage 1: {_STAGE1}"),
        "hive.stage1_skipped": (Action.SKIPPED, f"skipped by HIVE stage 1: {_STAGE1}"),
        "hive.stage2_kept": (
            Action.KEPT,
            ("kept by HIVE stage 2: prompt entropy {entropy:.3f} >= median {threshold:.3f} "
             "of {candidates:.0f} candidates"),
        ),
        "hive.stage2_skipped": (
            Action.SKIPPED,
            ("skipped by HIVE stage 2: prompt entropy {entropy:.3f} < median {threshold:.3f} "
             "of {candidates:.0f} candidates"),
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
    })
    conflicts = (Conflict("greso", "greso and hive both filter prompts from history; HIVE stage 1 with "
                                   "hive.lam = 1.0 is GRESO's filter: keep one of them"),)
    panels = (
        Panel("kept", "Prompts kept per stage", (
            Series("stage 1 candidates", metric="hive/stage1_candidates", style="bar"),
            Series("kept by stage 1", metric="hive/stage1_kept", style="bar"),
            Series("kept by stage 2", metric="hive/stage2_kept", style="bar"))),
        Panel("entropy", "Entropy threshold and prompt/response entropy correlation", (
            Series("entropy threshold", metric="hive/entropy_threshold"),
            Series("prompt/response entropy correlation", metric="hive/entropy_correlation", axis="right")),
            unit="value", right_unit="correlation"),
    )

    # -- stage 1 ------------------------------------------------------------------------
    def keep_probability(self, scores: dict[str, Floats], slots: Ints) -> Floats:
        scores["s_ent"] = hive.entropy_score(self.pipeline.ledger.mean_response_entropy(slots))
        return hive.stage1_keep_probability(scores["s_rew"], scores["s_ent"], self.params.lam)

    def record(self, step: StepView, keys: list[str], scores: dict[str, Floats],
               keep_probability: Floats, draw: Floats, kept: Mask) -> Report:
        decisions = tuple(
            self.decision(step.step, key, Layer.PRE_ROLLOUT, "hive.stage1_kept" if kept[i] else "hive.stage1_skipped", {
                "s_rew": float(scores["s_rew"][i]),
                "s_ent": float(scores["s_ent"][i]),
                "keep_probability": float(keep_probability[i]),
                "draw": float(draw[i]),
            })
            for i, key in enumerate(keys)
        )
        return Report(decisions=decisions,
                      added={"hive/stage1_candidates": len(keys), "hive/stage1_kept": int(kept.sum())})

    # -- stage 2 ------------------------------------------------------------------------
    def pool_size(self, need: int) -> int:
        return math.ceil(self.params.pool_factor * need)

    def gate(self, step: StepView, keys: list[str], prompt_entropy: PromptEntropyFn | None) -> Verdict:
        """Gate the pooled stage-1 survivors on the current policy's prompt entropy."""
        if prompt_entropy is None:
            raise ValueError("HIVE stage 2 needs the engine's prompt_entropy function (a forward pass)")
        p = self.params
        values = np.asarray(prompt_entropy(keys), dtype=np.float64)
        if values.shape != (len(keys),):
            raise ValueError(f"prompt_entropy returned shape {values.shape} for {len(keys)} prompts")
        keep = hive.entropy_gate(values, p.gate, p.k_off, p.k_keep)
        lower, upper = hive.gate_threshold(values, p.gate, p.k_off, p.k_keep)
        ledger = self.pipeline.ledger
        ledger.set_prompt_entropy(ledger.slots(keys), values)
        decisions = []
        for key, value, kept in zip(keys, values.tolist(), keep):
            numbers: dict[str, float]
            if p.gate == "median":
                reason = "hive.stage2_kept" if kept else "hive.stage2_skipped"
                numbers = {"entropy": value, "threshold": lower, "candidates": len(keys)}
            else:
                reason = "hive.band_kept" if kept else "hive.band_skipped"
                numbers = {"entropy": value, "lower": lower, "upper": upper, "candidates": len(keys)}
            decisions.append(self.decision(step.step, key, Layer.PRE_ROLLOUT, reason, numbers))
        return Verdict(keep=keep, decisions=tuple(decisions),
                       added={"hive/stage2_candidates": len(keys), "hive/stage2_kept": int(keep.sum())},
                       metrics={"hive/entropy_threshold": lower},
                       observed={"prompt_entropy": dict(zip(keys, values.tolist()))})

    def after_step(self, step: StepView) -> Report:
        super().after_step(step)
        entropy = step.observed.get("prompt_entropy", {})
        pairs = [(entropy[o.key], o.mean_entropy) for o in step.outcomes if o.key in entropy]
        correlation = hive.RunningPearson()
        if "pearson" in self.state:
            correlation.load_state_dict(self.state["pearson"])
        if pairs:
            x, y = zip(*pairs)
            correlation.add(x, y)
        self.state["pearson"] = correlation.state_dict()
        return Report(metrics={"hive/entropy_correlation": correlation.value})
