"""What a selection method is: a ``Selector`` declaring its layers, its composition
constraints and its typed parameters, with one hook per layer that returns what it decided.

The pipeline (pipeline.py) knows no method by name: it calls, for every selector, the hook
of each layer the selector declares (``active_layers``), in ``priority`` order within a
layer, and folds the returned ``Report`` (decisions, metrics, per-prompt observations)
into the step. A hook never writes into the step; it may update its own small state
(``Selector.state``, checkpointed with the ledger) and the shared ledger's columns.

Layers and their hooks (docs/algorithms.md, the table before §0):

- ``PRE_ROLLOUT``: ``screen`` clears candidates not worth a rollout (GRESO §2, HIVE stage 1
  §3, LZE's pruner §6). A selector with ``gathers = True`` also owns the pool of survivors
  gathered before ``gate`` (HIVE stage 2: ``pool_size``, ``gate``).
- ``ALLOCATION``: ``probe_size`` and ``allocate`` (HORA §4).
- ``POST_ROLLOUT``: the zero-variance post-filter and the size of each round (DAPO §1, or a
  history filter's ``post_filter`` option §2): ``runs_post_filter``, ``round_size``,
  ``max_rounds``, ``filter_round``.
- ``UPDATE``: ``select_update`` picks the collected groups that enter the update (LZE §6).
- ``ADVANTAGE``: ``token_advantages`` (GRPO §0, RL-ZVP §5).
- every selector: ``start_epoch`` / ``end_epoch`` (LZE's prune and replay), ``after_step``,
  ``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from workers.selection import dapo
from workers.selection.decisions import Action, Decision, Layer
from workers.selection.ledger import PromptLedger
from workers.selection.outcomes import GroupOutcome, TrainingBatch
from workers.selection.panels import Panel
from workers.selection.params import MethodParams, SelectionConfigError

P = TypeVar("P", bound=MethodParams)
Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
PromptEntropyFn = Callable[[list[str]], npt.ArrayLike]


class PipelineView(Protocol):
    """What a selector reads of the pipeline (pipeline.Pipeline): the run's B and N, the shared
    ledger and RNG, the step index, and the other selectors of the composition."""

    @property
    def batch_size(self) -> int: ...
    @property
    def group_size(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def ledger(self) -> PromptLedger: ...
    @property
    def rng(self) -> np.random.Generator: ...
    @property
    def selectors(self) -> Mapping[str, Selector[Any]]: ...
    @property
    def advantage(self) -> Selector[Any]: ...


class StepView(Protocol):
    """What a hook reads of the step in progress (pipeline.StepSelection); it writes nothing
    there: what it decides comes back in its Report."""

    @property
    def step(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def rng(self) -> np.random.Generator: ...
    @property
    def outcomes(self) -> Sequence[GroupOutcome]: ...
    @property
    def observed(self) -> Mapping[str, Mapping[str, float]]: ...
    @property
    def groups_generated(self) -> int: ...
    @property
    def groups_all_correct(self) -> int: ...
    @property
    def groups_all_wrong(self) -> int: ...


@dataclass(frozen=True)
class Report:
    """What a hook decided besides its main value; the pipeline adds it to the step."""

    decisions: tuple[Decision, ...] = ()
    added: Mapping[str, float] = field(default_factory=dict)  # metrics summed over the step's calls
    metrics: Mapping[str, float] = field(default_factory=dict)  # metrics set to this value
    observed: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # observation column -> key -> value


@dataclass(frozen=True, kw_only=True)
class Verdict(Report):
    keep: Mask  # one flag per candidate (or group) the hook was given


@dataclass(frozen=True, kw_only=True)
class Allocation(Report):
    extra: Ints  # extra rollouts per prompt of the round


@dataclass(frozen=True, kw_only=True)
class Advantages(Report):
    values: Floats  # (rollouts, tokens)


@dataclass(frozen=True, kw_only=True)
class EpochReport(Report):
    replay: tuple[str, ...] = ()  # prompt keys to roll out first in the new epoch


@dataclass(frozen=True)
class Conflict:
    """Two methods that cannot run together, and what to change."""

    other: str
    message: str
    field: str = "selectors"


# What a method at each layer is measured against (docs/savings.md): filters against dynamic
# sampling, update selection in backward tokens against the mixed groups, allocation and
# advantage shaping by what they buy at uniform GRPO's budget.
LAYER_YARDSTICKS: Mapping[Layer, str] = {
    Layer.PRE_ROLLOUT: "dynamic_sampling",
    Layer.POST_ROLLOUT: "dynamic_sampling",
    Layer.UPDATE: "backward_mixed",
    Layer.ALLOCATION: "uniform_budget",
    Layer.ADVANTAGE: "uniform_budget",
}


class Selector(Generic[P]):
    """One method. Subclass as ``class Mine(Selector[MineParams])`` and ``register`` it."""

    name: ClassVar[str]
    label: ClassVar[str]  # as a person reads it: chart legends, form checkboxes
    help: ClassVar[str]
    layers: ClassVar[frozenset[Layer]]
    Params: ClassVar[type[MethodParams]]
    panels: ClassVar[tuple[Panel, ...]] = ()  # the run page's charts of this method
    # Decision reasons this method records, beyond the built-in ones of decisions.REASONS.
    reasons: ClassVar[Mapping[str, tuple[Action, str]]] = {}
    # Composition: at most one selector of a run may hold each role (besides the roles the
    # pipeline derives: the allocation, the advantage, the pre-rollout gate) ...
    roles: ClassVar[frozenset[str]] = frozenset()
    # ... and none may run beside a method named here (checked from both sides).
    conflicts: ClassVar[tuple[Conflict, ...]] = ()
    priority: ClassVar[int] = 50  # order among the selectors of one layer, lowest first
    gathers: ClassVar[bool] = False  # PRE_ROLLOUT: owns a pool of survivors gated together
    uses_zero_variance: ClassVar[bool] = False  # ADVANTAGE: draws signal from zero-variance groups

    def __init__(self, params: P, pipeline: PipelineView) -> None:
        self.params: P = params
        self.pipeline = pipeline

    # -- declaration ------------------------------------------------------------------
    def active_layers(self) -> frozenset[Layer]:
        """The layers this instance acts at (its parameters may switch one off)."""
        return self.layers

    def yardsticks(self) -> frozenset[str]:
        """What this method's savings are measured against besides uniform GRPO
        (accounting.YARDSTICKS), by the layers it acts at."""
        return frozenset(LAYER_YARDSTICKS[layer] for layer in self.active_layers())

    def composition_errors(self, pipeline: PipelineView) -> list[SelectionConfigError]:
        """Constraints against the other methods or B and N that its parameters make."""
        return []

    def decision(self, step: int, key: str, layer: Layer, reason: str, scores: dict[str, float]) -> Decision:
        return Decision(step, key, layer, self.name, reason, scores)

    @property
    def state(self) -> dict[str, Any]:
        """Small per-method state, stored in the ledger so checkpoints carry it."""
        state: dict[str, Any] = self.pipeline.ledger.method_state.setdefault(self.name, {})
        return state

    # -- PRE_ROLLOUT ------------------------------------------------------------------
    def screen(self, step: StepView, keys: list[str], slots: Ints, keep: Mask) -> Verdict:
        """From history: which of ``keys`` (still kept where ``keep``) deserve a rollout."""
        return Verdict(keep=keep.copy())

    def pool_size(self, need: int) -> int:
        """``gathers``: survivors to gather before ``gate`` when ``need`` prompts are missing."""
        return need

    def gate(self, step: StepView, keys: list[str], prompt_entropy: PromptEntropyFn | None) -> Verdict:
        """``gathers``: which of the gathered survivors go to rollout."""
        return Verdict(keep=np.ones(len(keys), dtype=bool))

    # -- ALLOCATION -------------------------------------------------------------------
    def probe_size(self) -> int:
        """Rollouts per prompt before ``allocate``."""
        return self.pipeline.group_size

    def allocate(self, step: StepView, keys: list[str], successes: Ints) -> Allocation:
        return Allocation(extra=np.zeros(len(keys), dtype=np.int64))

    # -- POST_ROLLOUT -----------------------------------------------------------------
    def runs_post_filter(self, pipeline: PipelineView) -> bool:
        """Whether this selector's zero-variance post-filter runs in this composition."""
        return Layer.POST_ROLLOUT in self.active_layers()

    def round_size(self, missing: int) -> int:
        """Prompts to roll out in the next round while ``missing`` groups are still needed."""
        return missing

    def max_rounds(self) -> int:
        """Rollout rounds per step before training on what was kept (0: no limit)."""
        return 0

    def round_factor(self) -> float:
        """The largest round, as a multiple of B (verl keeps this many batches in flight)."""
        return 1.0

    def filter_round(self, step: StepView, outcomes: Sequence[GroupOutcome], room: int) -> Verdict:
        """DAPO's filter (docs/algorithms.md §1): mixed groups up to ``room``, the rest dropped."""
        verdicts = dapo.post_filter([o.zero_variance for o in outcomes], room)
        batch = self.pipeline.batch_size
        decisions = []
        for outcome, verdict in zip(outcomes, verdicts):
            if verdict == dapo.SURPLUS:
                decisions.append(self.decision(step.step, outcome.key, Layer.POST_ROLLOUT, "dapo.surplus",
                                               {"batch": batch}))
            elif verdict == dapo.ZERO_VARIANCE:
                reason = "dapo.all_correct" if outcome.successes == outcome.size else "dapo.all_wrong"
                decisions.append(self.decision(step.step, outcome.key, Layer.POST_ROLLOUT, reason,
                                               {"group_size": outcome.size}))
        zero_variance = int((verdicts == dapo.ZERO_VARIANCE).sum())
        return Verdict(keep=verdicts == dapo.KEEP, decisions=tuple(decisions),
                       added={"post_filter/dropped_zero_variance": zero_variance})

    def after_round(self, zero_variance: int, groups: int) -> None:
        """A post-filtered round had ``zero_variance`` of ``groups`` groups dropped."""

    # -- UPDATE -----------------------------------------------------------------------
    def select_update(self, step: StepView, groups: Sequence[GroupOutcome]) -> Verdict:
        """Which collected groups enter the update."""
        return Verdict(keep=np.ones(len(groups), dtype=bool))

    # -- ADVANTAGE --------------------------------------------------------------------
    def token_advantages(self, step: StepView, batch: TrainingBatch, token_entropy: Floats | None,
                         response_mask: npt.NDArray[Any]) -> Advantages:
        raise NotImplementedError(f"{self.name} declares no advantage")

    # -- epochs and steps -------------------------------------------------------------
    def start_epoch(self, epoch: int) -> EpochReport:
        return EpochReport()

    def end_epoch(self, epoch: int) -> EpochReport:
        return EpochReport()

    def after_step(self, step: StepView) -> Report:
        """Once the step's groups are observed: update controllers and small state."""
        return Report()

    def metrics(self) -> dict[str, float]:
        """Method-specific figures of the step just closed (dashboard panels)."""
        return {}
