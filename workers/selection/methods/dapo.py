"""DAPO dynamic sampling (docs/algorithms.md §1): the zero-variance post-filter, drawing
generation batches of ``gen_batch_factor`` x B until B mixed groups are collected."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from workers.selection.decisions import Layer
from workers.selection.panels import Panel, Series
from workers.selection.params import MethodParams, described
from workers.selection.selector import Selector


@dataclass(frozen=True)
class DapoParams(MethodParams):
    method: ClassVar[str] = "dapo"
    gen_batch_factor: float = described("prompts drawn per generation batch, as a multiple of B", 3.0, bounds=(1, 64))
    max_gen_batches: int = described("generation batches per step before training on what was kept (0 = no limit)", 10,
                                     bounds=(0, 1000))

    def check(self) -> None:
        self._require(self.gen_batch_factor >= 1, "gen_batch_factor", f"must be >= 1, got {self.gen_batch_factor}")
        self._require(self.max_gen_batches >= 0, "max_gen_batches", f"must be >= 0, got {self.max_gen_batches}")


class Dapo(Selector[DapoParams]):
    name = "dapo"
    label = "DAPO dynamic sampling"
    help = "Drops groups whose rollouts all agree and draws more prompts until B groups carry signal."
    layers = frozenset({Layer.POST_ROLLOUT})
    Params = DapoParams
    roles = frozenset({"post-filter"})
    panels = (Panel("dropped", "Zero-variance groups dropped", (
        Series("groups dropped", metric="post_filter/dropped_zero_variance", style="bar"),)),)

    def round_size(self, missing: int) -> int:
        return math.ceil(self.params.gen_batch_factor * self.pipeline.batch_size)

    def max_rounds(self) -> int:
        return self.params.max_gen_batches

    def round_factor(self) -> float:
        return self.params.gen_batch_factor
