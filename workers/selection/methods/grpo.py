"""GRPO (docs/algorithms.md §0): group-relative advantages, the baseline and the default
advantage when a run names no advantage method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy.typing as npt

from workers.selection import grpo
from workers.selection.decisions import Layer
from workers.selection.outcomes import TrainingBatch
from workers.selection.params import MethodParams, described
from workers.selection.selector import Advantages, Floats, Selector, StepView


@dataclass(frozen=True)
class GrpoParams(MethodParams):
    method: ClassVar[str] = "grpo"
    norm_by_std: bool = described("divide by the group std (False: Dr. GRPO, mean-centred only)", True)
    eps: float = described("added to the group std before dividing", 1e-6, bounds=(1e-12, 1))

    def check(self) -> None:
        self._require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


class Grpo(Selector[GrpoParams]):
    name = "grpo"
    label = "GRPO"
    help = "Group-relative advantages; the baseline every other method is measured against."
    layers = frozenset({Layer.ADVANTAGE})
    Params = GrpoParams

    def yardsticks(self) -> frozenset[str]:
        return frozenset()  # the baseline itself

    def token_advantages(self, step: StepView, batch: TrainingBatch, token_entropy: Floats | None,
                         response_mask: npt.NDArray[Any]) -> Advantages:
        p = self.params
        advantages = grpo.group_advantages(batch.rewards, batch.group_index, p.norm_by_std, p.eps)
        return Advantages(values=grpo.broadcast_to_tokens(advantages, response_mask))
