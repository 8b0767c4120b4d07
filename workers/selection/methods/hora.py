"""HORA (docs/algorithms.md §4): probe every prompt with n0 rollouts, then allocate the rest
of the round's N x prompts rollouts where a first success is likeliest."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from workers.selection import hora
from workers.selection.decisions import Action, Layer
from workers.selection.panels import Panel
from workers.selection.params import MethodParams, SelectionConfigError, described
from workers.selection.selector import Allocation, Ints, PipelineView, Selector, StepView


@dataclass(frozen=True)
class HoraParams(MethodParams):
    method: ClassVar[str] = "hora"
    # SELECTORS.md's default (8 of N = 32, the paper's). Below N = 9 HORA needs a smaller n0: the
    # check says so with the fix (lower hora.n0 or raise N); it is never ticked by default.
    n0: int = described("probe rollouts per prompt before allocation (the rest of N x prompts is allocated); "
                        "must be below N", 8, bounds=(1, 1024))
    prior_alpha: float = described("Beta prior alpha of the pass rate", 1.0, bounds=(0.001, 1000))
    prior_beta: float = described("Beta prior beta of the pass rate", 1.0, bounds=(0.001, 1000))
    shards: int = described("allocate within this many shards of the batch (1 = whole batch)", 1, bounds=(1, 1024))

    def check(self) -> None:
        self._require(self.n0 >= 1, "n0", f"must be >= 1, got {self.n0}")
        self._require(self.prior_alpha > 0 and self.prior_beta > 0, "prior_alpha",
                      "the Beta prior needs alpha, beta > 0")
        self._require(self.shards >= 1, "shards", f"must be >= 1, got {self.shards}")


class Hora(Selector[HoraParams]):
    name = "hora"
    label = "HORA"
    help = "Probes each prompt with n0 rollouts, then spends the rest of the budget where a first hit is likeliest."
    layers = frozenset({Layer.ALLOCATION})
    Params = HoraParams
    reasons = MappingProxyType({
        "hora.allocated": (
            Action.ALLOCATED,
            ("allocated by HORA: {successes:.0f}/{probe:.0f} probe hits, posterior mean {posterior_mean:.3f}, "
             "{extra:.0f} extra rollouts (group of {group_size:.0f})"),
        ),
    })
    panels = (Panel("allocation", "Extra rollouts allocated by probe successes", view="hora_allocation", wide=True),)

    def composition_errors(self, pipeline: PipelineView) -> list[SelectionConfigError]:
        n0, group_size = self.params.n0, pipeline.group_size
        if n0 >= group_size:
            return [SelectionConfigError(
                "hora.n0", f"the probe (n0 = {n0}) must be smaller than N = {group_size}, "
                "or nothing is left to allocate: lower hora.n0 or raise N")]
        return []

    def probe_size(self) -> int:
        return self.params.n0

    def allocate(self, step: StepView, keys: list[str], successes: Ints) -> Allocation:
        p = self.params
        n_extra = self.pipeline.group_size - p.n0
        extra = np.zeros(len(keys), dtype=np.int64)
        for shard in np.array_split(np.arange(len(keys)), min(p.shards, max(len(keys), 1))):
            if shard.size:
                extra[shard] = hora.allocate(successes[shard], p.n0, n_extra * shard.size,
                                             (p.prior_alpha, p.prior_beta))
        a, b = hora.posterior(successes, p.n0, (p.prior_alpha, p.prior_beta))
        decisions = tuple(
            self.decision(step.step, key, Layer.ALLOCATION, "hora.allocated", {
                "successes": int(successes[i]),
                "probe": p.n0,
                "posterior_mean": float(a[i] / (a[i] + b[i])),
                "extra": int(extra[i]),
                "group_size": int(p.n0 + extra[i]),
            })
            for i, key in enumerate(keys)
        )
        return Allocation(extra=extra, decisions=decisions)
