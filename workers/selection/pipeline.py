"""The composed selection pipeline: any valid set of methods, each at its layer.

The pipeline names no method: it asks each selector which layers it acts at and calls the
hook of that layer (workers/selection/selector.py), checks the composition from what the
selectors declare (conflicts, roles, constraints of their parameters), and adds what the
hooks return to the step. The methods are those of the registry (registry.py).

An engine drives one optimizer step like this (the same for the local and verl engines)::

    step = pipeline.begin_step(step_index, epoch)
    while step.needs_prompts():
        keys = loader.take(step.request_size())
        if not keys:
            step.loader_exhausted(); break
        round_ = step.pre_rollout(keys, prompt_entropy=forward_pass)  # PRE_ROLLOUT: GRESO, HIVE, LZE pruner
        loader.put_back(round_.deferred)
        probe = generate(round_.keys, round_.probe_sizes)
        extra = step.allocate(round_, successes_of(probe))              # ALLOCATION: HORA (else zeros)
        step.add_groups(outcomes_of(probe + generate(round_.keys, extra)))  # POST_ROLLOUT: DAPO filter
    batch = step.finish()                                               # UPDATE: LZE backward selection
    token_advantages = step.advantages(batch, token_entropy, response_mask)  # ADVANTAGE: GRPO or RL-ZVP
    result = step.close(seconds=..., parameters=..., forward_tokens_extra=...)

and at epoch boundaries ``pipeline.end_epoch(e)`` then ``pipeline.start_epoch(e + 1)``
(whose returned keys go to the front of the loader: LZE replays).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.selection.accounting import YARDSTICKS, StepAccounting
from workers.selection.decisions import Decision, Layer
from workers.selection.ledger import Bucket, PromptLedger
from workers.selection.outcomes import GroupOutcome, TrainingBatch
from workers.selection.params import SelectionConfigError
from workers.selection.registry import DEFAULT_ADVANTAGE, lookup
from workers.selection.selector import PromptEntropyFn, Report, Selector

__all__ = [
    "AUDIT_SHARE", "MAX_DRAW_FACTOR", "GroupOutcome", "Pipeline", "RolloutRound", "StepResult", "StepSelection",
    "TrainingBatch", "resolve_methods",
]

# How many candidates one step may draw, as a multiple of B, before it trains on what
# it has: a guard against filters that keep (almost) nothing.
MAX_DRAW_FACTOR = 50
# Share of candidates that bypass the pre-rollout filters when a run has any: uniform
# draws whose groups estimate the mixed-group rate dynamic sampling would see, the
# denominator of the filters' savings (docs/savings.md). Without a filter every group
# is a uniform draw and nothing is set aside.
AUDIT_SHARE = 0.05
# The mixed-rate estimate pools the latest steps' uniform groups until it holds this many,
# and gives none from fewer than AUDIT_MIN_GROUPS (N / q from a handful of groups is wild).
AUDIT_WINDOW_GROUPS = 64
AUDIT_MIN_GROUPS = 32


@dataclass
class RolloutRound:
    keys: list[str]
    probe_sizes: np.ndarray  # rollouts per prompt now: n0 with HORA, else N
    deferred: list[str]  # kept but not needed this round: give them back to the loader


@dataclass
class StepResult:
    step: int
    epoch: int
    accounting: StepAccounting
    metrics: dict[str, float]
    observations: list[dict[str, Any]]
    decisions: list[Decision]
    alerts: list[str]


def resolve_methods(methods: Mapping[str, Mapping[str, Any] | None] | Sequence[str]) -> dict[str, dict[str, Any]]:
    """Normalise a list of names or a {name: params} mapping; reject unknown or repeated names."""
    if isinstance(methods, Mapping):
        items = [(str(name), dict(params or {})) for name, params in methods.items()]
    else:
        items = [(str(name), {}) for name in methods]
    seen: dict[str, dict[str, Any]] = {}
    for name, params in items:
        lookup(name)
        if name in seen:
            raise SelectionConfigError("selectors", f"method {name!r} is listed twice")
        seen[name] = params
    return seen


# Layers one method holds alone: a run has one allocation and one advantage.
EXCLUSIVE_LAYERS = {Layer.ALLOCATION: "allocation", Layer.ADVANTAGE: "advantage"}


def _roles(selector: Selector[Any]) -> frozenset[str]:
    """The roles a selector holds in a run: those it declares, its exclusive layers, and the
    pre-rollout gate when it gathers a pool (at most one selector per role)."""
    layers = selector.active_layers()
    held = {role for layer, role in EXCLUSIVE_LAYERS.items() if layer in layers}
    if selector.gathers:
        held.add("pre-rollout gate")
    return selector.roles | held


def _ordered(selectors: Sequence[Selector[Any]], layer: Layer) -> list[Selector[Any]]:
    """The selectors acting at ``layer``, by priority, then in the run's order."""
    acting = [s for s in selectors if layer in s.active_layers()]
    return sorted(acting, key=lambda s: s.priority)


class Pipeline:
    """A valid composition of selectors, the prompt ledger they share, and their RNG."""

    def __init__(
        self,
        methods: Mapping[str, Mapping[str, Any] | None] | Sequence[str],
        *,
        batch_size: int,
        group_size: int,
        seed: int = 0,
        ledger: PromptLedger | None = None,
        audit_share: float = AUDIT_SHARE,
    ) -> None:
        if batch_size < 1:
            raise SelectionConfigError("batch_size", f"B must be >= 1 prompt per step, got {batch_size}")
        if group_size < 2:
            raise SelectionConfigError(
                "group_size", f"N must be >= 2: GRPO compares rollouts within a group, got {group_size}"
            )
        if not 0 <= audit_share < 1:
            raise SelectionConfigError("audit_share", f"must lie in [0, 1), got {audit_share}")
        self.batch_size = batch_size
        self.group_size = group_size
        self.audit_share = audit_share
        # (uniform groups, of them mixed) per recent step: the dynamic-sampling yardstick
        self.audit_window: list[tuple[int, int]] = []
        self.ledger = ledger if ledger is not None else PromptLedger()
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self._pending: list[Decision] = []
        resolved = resolve_methods(methods)
        classes = {name: lookup(name) for name in resolved}
        self.selectors: dict[str, Selector[Any]] = {
            name: cls(cls.Params.from_mapping(resolved[name]), self) for name, cls in classes.items()
        }
        chosen = list(self.selectors.values())
        advantage = _ordered(chosen, Layer.ADVANTAGE)
        default = lookup(DEFAULT_ADVANTAGE)
        # The method that sets the advantage (the default when the run names none).
        self.advantage: Selector[Any] = advantage[0] if advantage else default(default.Params.from_mapping({}), self)
        errors = self.composition_errors()
        if errors:
            raise SelectionConfigError(errors[0].field, errors[0].message, problems=errors)
        self.screeners = _ordered(chosen, Layer.PRE_ROLLOUT)
        # HIVE's stage 2: the pre-rollout selector that gathers survivors and gates them together.
        self.gatherer: Selector[Any] | None = next((s for s in self.screeners if s.gathers), None)
        allocation = _ordered(chosen, Layer.ALLOCATION)
        self.allocator: Selector[Any] | None = allocation[0] if allocation else None
        self.updaters = _ordered(chosen, Layer.UPDATE)
        # The zero-variance post-filter: a method whose layer it is, else one that offers it.
        owners = [s for s in chosen if s.runs_post_filter(self)]
        owners.sort(key=lambda s: Layer.POST_ROLLOUT not in s.active_layers())
        self.post_filter: Selector[Any] | None = owners[0] if owners else None
        state = self.ledger.method_state.get("pipeline")
        if state:
            self._load_own_state(state)

    # -- composition --------------------------------------------------------------------
    @classmethod
    def problems(
        cls,
        methods: Mapping[str, Mapping[str, Any] | None] | Sequence[str],
        *,
        batch_size: int,
        group_size: int,
        audit_share: float = AUDIT_SHARE,
    ) -> list[SelectionConfigError]:
        """Every problem of a composition at once, where the constructor stops at the first
        unknown method or bad parameter: each unknown or repeated method, each bad parameter of
        each method, then the conflicts between the methods as composed (a method whose
        parameters are bad takes part with its usable ones, and a composition problem on a
        parameter already refused is not said twice). B, N and the audit share are RunConfig's
        to check: here they only have to let the composition be judged."""
        items = ([(str(n), dict(p or {}) if isinstance(p, Mapping) else {}) for n, p in methods.items()]
                 if isinstance(methods, Mapping) else [(str(n), {}) for n in methods])
        found: list[SelectionConfigError] = []
        usable: dict[str, dict[str, Any]] = {}
        for name, params in items:
            try:
                method = lookup(name)
            except SelectionConfigError as exc:
                found.append(exc)
                continue
            if name in usable:
                found.append(SelectionConfigError("selectors", f"method {name!r} is listed twice"))
                continue
            bad = method.Params.problems(params)
            found.extend(bad)
            refused = {p.field.partition(".")[2] for p in bad}
            kept = {k: v for k, v in params.items() if k not in refused}
            usable[name] = kept if not method.Params.problems(kept) else {}
        try:
            cls(usable, batch_size=max(batch_size, 1), group_size=max(group_size, 2),
                audit_share=min(max(audit_share, 0.0), 0.99))
        except SelectionConfigError as exc:
            said = {p.field for p in found}
            found.extend(p for p in exc.problems if p.field == "selectors" or p.field not in said)
        return found

    def composition_errors(self) -> list[SelectionConfigError]:
        """Every composition problem, from what each selector declares: conflicts between two
        methods, roles two methods hold at once, and constraints of a selector's parameters."""
        errors: list[SelectionConfigError] = []
        chosen = list(self.selectors.values())
        reported: set[frozenset[str]] = set()
        for sel in chosen:
            for conflict in sel.conflicts:
                pair = frozenset({sel.name, conflict.other})
                if conflict.other in self.selectors and pair not in reported:
                    reported.add(pair)
                    errors.append(SelectionConfigError(conflict.field, conflict.message))
        for i, first in enumerate(chosen):
            for second in chosen[i + 1:]:
                pair = frozenset({first.name, second.name})
                shared = sorted(_roles(first) & _roles(second))
                if shared and pair not in reported:
                    reported.add(pair)
                    errors.append(SelectionConfigError(
                        "selectors",
                        f"{first.name} and {second.name} are both the run's {shared[0]}: keep one of them"))
        for sel in chosen:
            errors.extend(sel.composition_errors(self))
        return errors

    @property
    def post_filter_owner(self) -> str | None:
        """The method whose zero-variance post-filter runs, or None when there is none."""
        return self.post_filter.name if self.post_filter is not None else None

    @property
    def probe_size(self) -> int:
        """Rollouts per prompt before allocation: the allocator's probe, else N."""
        return self.allocator.probe_size() if self.allocator is not None else self.group_size

    def yardsticks(self) -> list[str]:
        """What this composition's savings are measured against: uniform GRPO first, then each
        method's (Selector.yardsticks), in accounting.YARDSTICKS order."""
        claimed = {y for selector in self.selectors.values() for y in selector.yardsticks()}
        return ["uniform", *(y for y in YARDSTICKS if y != "uniform" and y in claimed)]

    def methods(self) -> list[str]:
        return list(self.selectors)

    @property
    def screening(self) -> str | None:
        """The first method that filters candidates before rollout, or None."""
        return self.screeners[0].name if self.screeners else None

    def mixed_rate_uniform(self, drawn: int, mixed: int) -> tuple[float, int]:
        """Add a step's uniform groups to the window; the mixed-group rate of uniform draws
        over the latest steps holding AUDIT_WINDOW_GROUPS groups, and how many groups it
        rests on (NaN below AUDIT_MIN_GROUPS). A window with no mixed group gives 1/2 a group
        over its size: finite and small."""
        if drawn:
            self.audit_window.append((drawn, mixed))
        total_drawn = total_mixed = kept = 0
        for d, m in reversed(self.audit_window):
            total_drawn, total_mixed, kept = total_drawn + d, total_mixed + m, kept + 1
            if total_drawn >= AUDIT_WINDOW_GROUPS:
                break
        self.audit_window = self.audit_window[-kept:] if kept else []
        if total_drawn < AUDIT_MIN_GROUPS:
            return math.nan, total_drawn
        return max(total_mixed, 0.5) / total_drawn, total_drawn

    def rollouts_dynamic_sampling(self, mixed_groups: int, rate: float, groups: int) -> float:
        """Rollouts dynamic sampling needs for ``mixed_groups`` mixed groups: N / q each, with
        q estimated from ``groups`` uniform groups. 1 / q_hat overshoots 1 / q by about
        (1 - q) / (n q) (delta method); dividing that out keeps small windows from inflating
        the yardstick."""
        if not (rate > 0):
            return math.nan
        return mixed_groups * self.group_size / rate / (1 + (1 - rate) / (groups * rate))

    # -- steps and epochs -----------------------------------------------------------------
    def begin_step(self, step: int, epoch: int) -> StepSelection:
        self.step = step
        selection = StepSelection(self, step, epoch)
        selection.decisions.extend(Decision(step, d.prompt_key, d.layer, d.method, d.reason, d.scores)
                                   for d in self._pending)
        self._pending = []
        return selection

    def end_epoch(self, epoch: int) -> list[Decision]:
        decisions = [d for sel in self.selectors.values() for d in sel.end_epoch(epoch).decisions]
        self._pending.extend(decisions)
        return decisions

    def start_epoch(self, epoch: int) -> list[str]:
        """Open an epoch; returns prompt keys to roll out first (LZE replays)."""
        reports = [sel.start_epoch(epoch) for sel in self.selectors.values()]
        self._pending.extend(d for report in reports for d in report.decisions)
        return [key for report in reports for key in report.replay]

    # -- checkpoints --------------------------------------------------------------------
    def _own_state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "step": self.step,
            "pending": [d.to_record() for d in self._pending],
            "audit_window": [list(pair) for pair in self.audit_window],
        }

    def _load_own_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.step = int(state["step"])
        self.audit_window = [(int(d), int(m)) for d, m in state.get("audit_window", [])]
        self._pending = [
            Decision(r["step"], r["prompt_key"], Layer(r["layer"]), r["method"], r["reason"], r["scores"])
            for r in state["pending"]
        ]

    def save(self, path: str | Path) -> None:
        """Checkpoint the ledger, every method's state and the RNG in one file."""
        self.ledger.method_state["pipeline"] = self._own_state()
        self.ledger.save(path)

    @classmethod
    def load(
        cls, path: str | Path, methods: Mapping[str, Mapping[str, Any] | None] | Sequence[str], *,
        batch_size: int, group_size: int, audit_share: float = AUDIT_SHARE,
    ) -> Pipeline:
        return cls(methods, batch_size=batch_size, group_size=group_size, ledger=PromptLedger.load(path),
                   audit_share=audit_share)


class StepSelection:
    """One optimizer step in progress: rounds of candidates, rollouts, the training batch.

    It holds the step's collection state only; what the selectors decide comes back from
    their hooks and is added here by ``apply``."""

    def __init__(self, pipeline: Pipeline, step: int, epoch: int) -> None:
        self.pipeline = pipeline
        self.step = step
        self.epoch = epoch
        self.rng = pipeline.rng
        self.decisions: list[Decision] = []
        self.metrics: dict[str, float] = {}
        self.alerts: list[str] = []
        # per-prompt values the selectors observed, by observation column ("prompt_entropy", "energy")
        self.observed: dict[str, dict[str, float]] = {}
        self.outcomes: list[GroupOutcome] = []  # every group generated this step
        self.batch_groups: list[GroupOutcome] = []  # collected for the update (after the post-filter)
        self.trained_groups: list[GroupOutcome] = []  # after update selection
        self.rounds = 0
        self.candidates_drawn = 0  # drawn from the loader, replays and deferred ones included
        self.candidates_deferred = 0  # kept but given back to the loader for a later step
        self.rollouts_effective = 0
        self.audited: set[str] = set()  # candidates that bypassed the filters (uniform draws)
        self._pending: list[str] = []  # kept, waiting for the round to fill
        self._pool: list[str] = []  # survivors gathered for the gatherer's gate (HIVE stage 2)
        self._round_target = 0
        self._exhausted = False
        self._finished = False

    @property
    def post_filter(self) -> str | None:
        """The method whose zero-variance post-filter runs this step, or None."""
        return self.pipeline.post_filter_owner

    @property
    def max_rounds(self) -> int:
        """Rollout rounds this step may take before training on what was kept (0: no limit)."""
        owner = self.pipeline.post_filter
        return int(owner.max_rounds()) if owner is not None else 0

    # -- what the hooks return, added to the step -------------------------------------------
    def apply(self, report: Report) -> None:
        for name, value in report.added.items():
            self.metric_add(name, value)
        self.metrics.update(report.metrics)
        for column, values in report.observed.items():
            self.observed.setdefault(column, {}).update(values)
        self.decisions.extend(report.decisions)

    def decide(self, key: str, layer: Layer, method: str, reason: str, scores: dict[str, float]) -> None:
        """Record a decision an engine takes for a method (verl's own RL-ZVP advantage)."""
        self.decisions.append(Decision(self.step, key, layer, method, reason, scores))

    def metric_add(self, name: str, value: float) -> None:
        self.metrics[name] = self.metrics.get(name, 0.0) + value

    @property
    def groups_generated(self) -> int:
        return len(self.outcomes)

    @property
    def groups_all_correct(self) -> int:
        return sum(1 for o in self.outcomes if o.successes == o.size)

    @property
    def groups_all_wrong(self) -> int:
        return sum(1 for o in self.outcomes if o.successes == 0)

    # -- pre-rollout ----------------------------------------------------------------------
    def needs_prompts(self) -> bool:
        B = self.pipeline.batch_size
        if self._finished or self._exhausted or len(self.batch_groups) >= B:
            return False
        if self.max_rounds and self.rounds >= self.max_rounds:
            self._alert_once(
                f"stopped drawing after {self.rounds} generation rounds with {len(self.batch_groups)} of {B} "
                "groups; training on those (raise max_gen_batches to draw more)"
            )
            return False
        if not self._can_draw_more() and not self._pending and not self._pool:
            self._alert_once(
                f"pre-rollout filters kept too few prompts: {self.candidates_drawn} drawn for "
                f"{len(self.batch_groups)} of {B} groups; training on those"
            )
            return False
        return True

    def _alert_once(self, message: str) -> None:
        if message not in self.alerts:
            self.alerts.append(message)

    def round_target(self) -> int:
        """Prompts to roll out in the next round: what is missing, or as the post-filter sizes it."""
        if self._round_target:
            return self._round_target
        p = self.pipeline
        missing = p.batch_size - len(self.batch_groups)
        target = p.post_filter.round_size(missing) if p.post_filter is not None else missing
        self._round_target = max(target, 1)
        return self._round_target

    def set_round_target(self, prompts: int) -> None:
        """The next round rolls out this many prompts: for engines whose own loop sizes the
        rounds (verl's replay buffer asks for B, then for refills of filtered groups)."""
        if prompts < 1:
            raise ValueError(f"a round rolls out at least one prompt, not {prompts}")
        self._round_target = int(prompts)

    def request_size(self) -> int:
        """How many candidates to draw now."""
        need = self.round_target() - len(self._pending)
        gatherer = self.pipeline.gatherer
        if gatherer is not None:
            return max(1, gatherer.pool_size(need) - len(self._pool))
        return max(1, need)

    def loader_exhausted(self) -> None:
        """The engine has no more candidates this step: roll out what is pending."""
        self._exhausted = True

    def pre_rollout(self, keys: Sequence[str], prompt_entropy: PromptEntropyFn | None = None) -> RolloutRound:
        keys = list(keys)
        self.candidates_drawn += len(keys)
        p = self.pipeline
        audit: list[str] = []
        screening = p.screening
        if screening and p.audit_share:
            drawn = self.rng.random(len(keys)) < p.audit_share
            audit = [k for k, a in zip(keys, drawn) if a]
            keys = [k for k, a in zip(keys, drawn) if not a]
            for key in audit:
                self.decide(key, Layer.PRE_ROLLOUT, screening, "audit.uniform", {"share": p.audit_share})
            self.audited.update(audit)
        slots = p.ledger.slots(keys)
        keep = np.ones(len(keys), dtype=bool)
        for sel in p.screeners:
            verdict = sel.screen(self, keys, slots, keep)
            self.apply(verdict)
            keep = verdict.keep
        survivors = [k for k, kept in zip(keys, keep) if kept]
        self._pending.extend(audit)  # past every filter, the gate included
        short = not self._can_draw_more()
        empty = RolloutRound([], np.zeros(0, dtype=np.int64), [])
        gatherer = p.gatherer
        if gatherer is not None:
            self._pool.extend(survivors)
            if len(self._pool) < gatherer.pool_size(self.round_target() - len(self._pending)) and not short:
                return empty
            gate_keys, self._pool = self._pool, []
            survivors = []
            if gate_keys:
                verdict = gatherer.gate(self, gate_keys, prompt_entropy)
                self.apply(verdict)
                survivors = [k for k, ok in zip(gate_keys, verdict.keep) if ok]
        self._pending.extend(survivors)
        target = self.round_target()
        if len(self._pending) < target and not short:
            return empty
        roll, deferred = self._pending[:target], self._pending[target:]
        self._pending = []
        self.candidates_deferred += len(deferred)
        self._round_target = 0
        return RolloutRound(roll, np.full(len(roll), p.probe_size, dtype=np.int64), deferred)

    def _can_draw_more(self) -> bool:
        """Whether drawing may go on after this draw (else roll out what is pending)."""
        return not (self._exhausted or self.candidates_drawn >= MAX_DRAW_FACTOR * self.pipeline.batch_size)

    # -- allocation -----------------------------------------------------------------------
    def allocate(self, round_: RolloutRound, probe_successes: Sequence[int]) -> npt.NDArray[np.int64]:
        """Extra rollouts per prompt of the round: the allocator's (HORA), or none."""
        successes = np.asarray(probe_successes, dtype=np.int64)
        if successes.shape != (len(round_.keys),):
            raise ValueError(f"need one probe success count per prompt: {successes.shape} for {len(round_.keys)}")
        allocator = self.pipeline.allocator
        if allocator is None or not round_.keys:
            return np.zeros(len(round_.keys), dtype=np.int64)
        allocation = allocator.allocate(self, round_.keys, successes)
        self.apply(allocation)
        return allocation.extra

    # -- post-rollout ---------------------------------------------------------------------
    def add_groups(self, outcomes: Sequence[GroupOutcome]) -> None:
        """Take a round's scored groups; the post-filter keeps mixed groups up to B."""
        self.rounds += 1
        self.outcomes.extend(outcomes)
        owner = self.pipeline.post_filter
        if owner is None:
            self.batch_groups.extend(outcomes)
            return
        verdict = owner.filter_round(self, outcomes, self.pipeline.batch_size - len(self.batch_groups))
        self.batch_groups.extend(o for o, ok in zip(outcomes, verdict.keep) if ok)
        self.apply(verdict)
        if outcomes:
            zero_variance = sum(1 for o in outcomes if o.zero_variance)
            for sel in self.pipeline.selectors.values():
                sel.after_round(zero_variance, len(outcomes))

    def finish(self) -> TrainingBatch:
        """Close collection; update selection (LZE backward) picks the groups that enter the update."""
        self._finished = True
        groups = self.batch_groups
        B = self.pipeline.batch_size
        self.metrics["selection/groups_collected"] = float(len(groups))
        if len(groups) < B:
            # Always said, also after a drawing alert: a short step trains on fewer groups
            # than B and is not comparable to a full one.
            self.alerts.append(f"short batch: {len(groups)} of {B} groups collected for the update")
        for sel in self.pipeline.updaters:
            if not groups:
                break
            verdict = sel.select_update(self, groups)
            self.apply(verdict)
            groups = [g for g, ok in zip(groups, verdict.keep) if ok]
        self.trained_groups = groups
        if not groups:
            empty = np.zeros(0)
            return TrainingBatch([], empty, np.zeros(0, dtype=np.int64), empty)
        rewards = np.concatenate([g.rewards for g in groups])
        sizes = np.array([g.size for g in groups])
        group_index = np.repeat(np.arange(len(groups)), sizes)
        weights = self.pipeline.group_size / sizes[group_index]
        return TrainingBatch(groups, rewards, group_index, weights.astype(np.float64))

    def advantages(self, batch: TrainingBatch, token_entropy: npt.NDArray[np.float64] | None,
                   response_mask: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(rollouts, tokens) advantages of the training batch, or of a mini-batch of whole
        groups (``batch.subset``): the run's advantage method (GRPO unless another is chosen).
        Call once per group."""
        mask = np.asarray(response_mask)
        if not batch.groups:
            return np.zeros((0, mask.shape[-1] if mask.ndim == 2 else 0))
        result = self.pipeline.advantage.token_advantages(self, batch, token_entropy, mask)
        self.apply(result)
        out = result.values
        self.rollouts_effective += int((np.abs(out) > 0).any(axis=1).sum())
        return out

    # -- close ----------------------------------------------------------------------------
    def close(
        self,
        *,
        seconds: Mapping[str, float] | None = None,
        parameters: int = 0,
        forward_tokens_extra: int = 0,
    ) -> StepResult:
        """Record the step's visits in the ledger, update controllers, account for it."""
        p = self.pipeline
        if not self._finished:
            raise RuntimeError("call finish() (and advantages()) before close()")
        ledger = p.ledger
        outcomes = self.outcomes
        slots = ledger.observe(
            [o.key for o in outcomes],
            np.array([o.successes for o in outcomes], dtype=np.int64),
            np.array([o.size for o in outcomes], dtype=np.int64),
            step=self.step,
            epoch=self.epoch,
            response_entropy=np.array([o.mean_entropy for o in outcomes], dtype=np.float64),
        ) if outcomes else np.zeros(0, dtype=np.int64)
        for sel in p.selectors.values():
            self.apply(sel.after_step(self))
        for sel in p.selectors.values():
            self.metrics.update(sel.metrics())
        self.metrics["selection/candidates_drawn"] = float(self.candidates_drawn)
        self.metrics["selection/candidates_deferred"] = float(self.candidates_deferred)

        trained = {id(g) for g in self.trained_groups}
        uniform = outcomes if p.screening is None else [o for o in outcomes if o.key in self.audited]
        uniform_mixed = sum(1 for o in uniform if not o.zero_variance)
        mixed_rate, window = p.mixed_rate_uniform(len(uniform), uniform_mixed)
        mixed_collected = [g for g in self.batch_groups if not g.zero_variance]
        buckets = ledger.buckets(slots, self.step)
        prompt_entropy = self.observed.get("prompt_entropy", {})
        energy = self.observed.get("energy", {})
        observations = []
        for outcome, bucket in zip(outcomes, buckets):
            observations.append({
                "prompt_key": outcome.key,
                "group_size": outcome.size,
                "successes": outcome.successes,
                "pass_rate": outcome.pass_rate,
                "response_entropy": outcome.mean_entropy,
                "prompt_entropy": prompt_entropy.get(outcome.key, float("nan")),
                "energy": energy.get(outcome.key, float("nan")),
                "response_tokens": int(outcome.response_tokens.sum()),
                "trained": id(outcome) in trained,
                "bucket": Bucket.NAMES[int(bucket)],
            })
        accounting = StepAccounting(
            step=self.step,
            rollouts_generated=sum(o.size for o in outcomes),
            tokens_generated=int(sum(int(o.response_tokens.sum()) for o in outcomes)),
            rollouts_effective=self.rollouts_effective,
            rollouts_trained=sum(g.size for g in self.trained_groups),
            rollouts_uniform=p.batch_size * p.group_size,
            groups_generated=len(outcomes),
            groups_all_correct=self.groups_all_correct,
            groups_all_wrong=self.groups_all_wrong,
            groups_trained=len(self.trained_groups),
            forward_tokens_extra=int(forward_tokens_extra),
            backward_tokens=int(sum(int(g.response_tokens.sum()) for g in self.trained_groups)),
            parameters=int(parameters),
            prompt_tokens_generated=sum(o.prompt_tokens * o.size for o in outcomes),
            backward_prompt_tokens=sum(g.prompt_tokens * g.size for g in self.trained_groups),
            groups_uniform=len(uniform),
            groups_uniform_mixed=uniform_mixed,
            mixed_rate_uniform=mixed_rate,
            groups_mixed_collected=len(mixed_collected),
            rollouts_dynamic_sampling=p.rollouts_dynamic_sampling(len(mixed_collected), mixed_rate, window),
            backward_tokens_mixed=int(sum(int(g.response_tokens.sum()) for g in mixed_collected)),
            seconds={k: float(v) for k, v in (seconds or {}).items()},
        )
        p.step = self.step + 1
        return StepResult(self.step, self.epoch, accounting, dict(self.metrics), observations,
                          list(self.decisions), list(self.alerts))

