"""HORA (docs/algorithms.md §4): probe every prompt with n0 rollouts, then allocate the rest
of the round's N x prompts rollouts where a first success is likeliest."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from workers.selection import hora
from workers.selection.decisions import Action, Layer
from workers.selection.panels import Panel
from workers.selection.params import HoraParams, SelectionConfigError
from workers.selection.selector import Allocation, Ints, PipelineView, Selector, StepView


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
