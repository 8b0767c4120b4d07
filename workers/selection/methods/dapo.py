"""DAPO dynamic sampling (docs/algorithms.md §1): the zero-variance post-filter, drawing
generation batches of ``gen_batch_factor`` x B until B mixed groups are collected."""

from __future__ import annotations

import math

from workers.selection.decisions import Layer
from workers.selection.panels import Panel, Series
from workers.selection.params import DapoParams
from workers.selection.selector import Selector


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
