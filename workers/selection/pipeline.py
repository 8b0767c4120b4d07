"""The composed selection pipeline: any valid set of methods, each at its layer.

An engine drives one optimizer step like this (the same for the local and verl engines)::

    step = pipeline.begin_step(step_index, epoch)
    while step.needs_prompts():
        keys = loader.take(step.request_size())
        if not keys:
            step.loader_exhausted(); break
        round_ = step.pre_rollout(keys, prompt_entropy=forward_pass)  # GRESO, HIVE, LZE pruner
        loader.put_back(round_.deferred)
        probe = generate(round_.keys, round_.probe_sizes)
        extra = step.allocate(round_, successes_of(probe))              # HORA (else zeros)
        step.add_groups(outcomes_of(probe + generate(round_.keys, extra)))  # DAPO filter
    batch = step.finish()                                               # LZE backward selection
    token_advantages = step.advantages(batch, token_entropy, response_mask)  # GRPO or RL-ZVP
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

from workers.selection import dapo, greso
from workers.selection.accounting import StepAccounting
from workers.selection.decisions import Decision, Layer
from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.ledger import Bucket, PromptLedger
from workers.selection.params import GresoParams, LzeParams, SelectionConfigError
from workers.selection.selectors import (
    REGISTRY,
    Greso,
    Grpo,
    Hive,
    Hora,
    Lze,
    PromptEntropyFn,
    Rlzvp,
    Selector,
)

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
class GroupOutcome:
    """One prompt's rollouts in this step, as the engine scored them."""

    key: str
    rewards: np.ndarray
    response_tokens: np.ndarray  # response length per rollout
    mean_entropy: float = float("nan")  # mean response-token entropy over the group
    prompt_tokens: int = 0  # the prompt's length in tokens (0: not measured by the engine)

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        self.response_tokens = np.asarray(self.response_tokens, dtype=np.int64)
        if self.rewards.ndim != 1 or self.rewards.size == 0 or self.response_tokens.shape != self.rewards.shape:
            raise ValueError(f"group {self.key!r}: need one reward and one response length per rollout")
        if not np.isfinite(self.rewards).all():
            raise ValueError(f"group {self.key!r}: rewards must be finite (a verifier returned no score)")

    @property
    def size(self) -> int:
        return int(self.rewards.size)

    @property
    def successes(self) -> int:
        return int((self.rewards >= SUCCESS_THRESHOLD).sum())

    @property
    def pass_rate(self) -> float:
        return self.successes / self.size

    @property
    def zero_variance(self) -> bool:
        return self.size >= 2 and bool(self.rewards.min() == self.rewards.max())


@dataclass
class RolloutRound:
    keys: list[str]
    probe_sizes: np.ndarray  # rollouts per prompt now: n0 with HORA, else N
    deferred: list[str]  # kept but not needed this round: give them back to the loader


@dataclass
class TrainingBatch:
    groups: list[GroupOutcome]
    rewards: np.ndarray  # (rollouts,) in group order
    group_index: np.ndarray  # (rollouts,) position of each rollout's group in ``groups``
    rollout_weights: np.ndarray  # (rollouts,) N / G_i: every prompt weighs the same

    @property
    def response_tokens(self) -> np.ndarray:
        if not self.groups:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([g.response_tokens for g in self.groups])

    def subset(self, positions: Sequence[int]) -> TrainingBatch:
        """The batch restricted to some of its groups (a mini-batch of whole groups)."""
        groups = [self.groups[int(i)] for i in positions]
        rows = np.concatenate([np.flatnonzero(self.group_index == int(i)) for i in positions]) if groups else np.zeros(0, int)
        sizes = np.array([g.size for g in groups], dtype=np.int64)
        return TrainingBatch(groups, self.rewards[rows], np.repeat(np.arange(len(groups)), sizes),
                             self.rollout_weights[rows])

    def group_rows(self) -> list[np.ndarray]:
        """Rollout rows of each group, in group order."""
        starts = np.r_[0, np.cumsum([g.size for g in self.groups])]
        return [np.arange(starts[i], starts[i + 1]) for i in range(len(self.groups))]


@dataclass
class StepResult:
    step: int
    epoch: int
    accounting: StepAccounting
    metrics: dict[str, float]
    observations: list[dict[str, Any]]
    decisions: list[Decision]
    alerts: list[str]

    def to_record(self) -> dict[str, Any]:
        """The step record every engine sends through the telemetry sink."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "summary": {**self.accounting.to_record(), "metrics": self.metrics},
            "observations": self.observations,
            "decisions": [d.to_record() for d in self.decisions],
            "alerts": self.alerts,
        }


def resolve_methods(methods: Mapping[str, Mapping[str, Any] | None] | Sequence[str]) -> dict[str, dict[str, Any]]:
    """Normalise a list of names or a {name: params} mapping; reject unknown or repeated names."""
    if isinstance(methods, Mapping):
        items = [(str(name), dict(params or {})) for name, params in methods.items()]
    else:
        items = [(str(name), {}) for name in methods]
    seen: dict[str, dict[str, Any]] = {}
    for name, params in items:
        if name not in REGISTRY:
            raise SelectionConfigError(
                "selectors", f"unknown method {name!r}; valid methods are {', '.join(REGISTRY)}"
            )
        if name in seen:
            raise SelectionConfigError("selectors", f"method {name!r} is listed twice")
        seen[name] = params
    return seen


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
        self.selectors: dict[str, Selector] = {
            name: REGISTRY[name](REGISTRY[name].Params.from_mapping(params), self)
            for name, params in resolved.items()
        }
        self._check_composition()
        state = self.ledger.method_state.get("pipeline")
        if state:
            self._load_own_state(state)

    # -- composition --------------------------------------------------------------------
    def _check_composition(self) -> None:
        s = self.selectors
        if "greso" in s and "hive" in s:
            raise SelectionConfigError(
                "selectors", "greso and hive both filter prompts from history; HIVE stage 1 with "
                "hive.lam = 1.0 is GRESO's filter: keep one of them"
            )
        if "grpo" in s and "rlzvp" in s:
            raise SelectionConfigError(
                "selectors", "grpo and rlzvp both set the advantage; RL-ZVP already uses GRPO for "
                "mixed groups: drop grpo"
            )
        if "rlzvp" in s and "dapo" in s:
            raise SelectionConfigError(
                "selectors", "dapo drops the zero-variance groups that rlzvp draws its signal from: "
                "choose one of them"
            )
        lze = s.get("lze")
        if lze is not None and "rlzvp" in s and isinstance(lze.params, LzeParams) and lze.params.backward:
            raise SelectionConfigError(
                "lze.backward", "LZE backward selection updates only on mixed groups, so rlzvp would "
                "shape nothing: set lze.backward = false (keep the pruner) or drop rlzvp"
            )
        history = self.history_filter
        if history is not None:
            p = history.params
            assert isinstance(p, GresoParams)
            if p.post_filter == "on" and "rlzvp" in s:
                raise SelectionConfigError(
                    f"{history.name}.post_filter", "the zero-variance post-filter would drop the groups "
                    "rlzvp shapes: set it to auto or off"
                )
            if p.post_filter == "off" and "dapo" in s:
                raise SelectionConfigError(
                    f"{history.name}.post_filter", "dapo is the post-filter: remove dapo or set "
                    f"{history.name}.post_filter to auto"
                )
        hora_sel = s.get("hora")
        if hora_sel is not None:
            n0 = hora_sel.params.n0  # type: ignore[attr-defined]
            if n0 >= self.group_size:
                raise SelectionConfigError(
                    "hora.n0", f"the probe (n0 = {n0}) must be smaller than N = {self.group_size}, "
                    "or nothing is left to allocate: lower hora.n0 or raise N"
                )

    @property
    def history_filter(self) -> Greso | None:
        for name in ("hive", "greso"):
            sel = self.selectors.get(name)
            if isinstance(sel, Greso):
                return sel
        return None

    @property
    def post_filter_owner(self) -> str | None:
        """The method whose zero-variance post-filter runs, or None when there is none."""
        if "dapo" in self.selectors:
            return "dapo"
        history = self.history_filter
        if history is None:
            return None
        mode = history.params.post_filter  # type: ignore[attr-defined]
        if mode == "on" or (mode == "auto" and "rlzvp" not in self.selectors):
            return history.name
        return None

    @property
    def advantage_selector(self) -> Grpo | Rlzvp:
        sel = self.selectors.get("rlzvp") or self.selectors.get("grpo")
        if sel is None:
            sel = Grpo(Grpo.Params.from_mapping({}), self)
        assert isinstance(sel, (Grpo, Rlzvp))
        return sel

    def methods(self) -> list[str]:
        return list(self.selectors)

    @property
    def screening(self) -> str | None:
        """The first method that filters candidates before rollout, or None."""
        for name in ("lze", "hive", "greso"):
            sel = self.selectors.get(name)
            if sel is not None and (name != "lze" or sel.params.prune):  # type: ignore[attr-defined]
                return name
        return None

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
        decisions = [d for sel in self.selectors.values() for d in sel.end_epoch(epoch)]
        self._pending.extend(decisions)
        return decisions

    def start_epoch(self, epoch: int) -> list[str]:
        """Open an epoch; returns prompt keys to roll out first (LZE replays)."""
        decisions = [d for sel in self.selectors.values() for d in sel.start_epoch(epoch)]
        self._pending.extend(decisions)
        return [d.prompt_key for d in decisions if d.reason == "lze.replayed"]

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
    """One optimizer step in progress: rounds of candidates, rollouts, the training batch."""

    def __init__(self, pipeline: Pipeline, step: int, epoch: int) -> None:
        self.pipeline = pipeline
        self.step = step
        self.epoch = epoch
        self.rng = pipeline.rng
        self.decisions: list[Decision] = []
        self.metrics: dict[str, float] = {}
        self.alerts: list[str] = []
        self.outcomes: list[GroupOutcome] = []  # every group generated this step
        self.batch_groups: list[GroupOutcome] = []  # collected for the update (after the post-filter)
        self.trained_groups: list[GroupOutcome] = []  # after backward selection
        self.prompt_entropy: dict[str, float] = {}
        self.lze_energy: dict[str, float] = {}
        self.rounds = 0
        self.candidates_drawn = 0  # drawn from the loader, replays and deferred ones included
        self.candidates_deferred = 0  # kept but given back to the loader for a later step
        self.rollouts_effective = 0
        self._pending: list[str] = []  # kept, waiting for the round to fill
        self._pool: list[str] = []  # HIVE: stage-1 survivors waiting for stage 2
        self.audited: set[str] = set()  # candidates that bypassed the filters (uniform draws)
        self._round_target = 0
        self._exhausted = False
        self._finished = False
        owner = pipeline.post_filter_owner
        self.post_filter = owner
        sel = pipeline.selectors.get(owner) if owner else None
        self.max_rounds = int(getattr(sel.params, "max_gen_batches", 0)) if sel else 0

    # -- helpers used by the selectors ----------------------------------------------------
    def decide(self, key: str, layer: Layer, method: str, reason: str, scores: dict[str, float]) -> None:
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
        """Prompts to roll out in the next round."""
        if self._round_target:
            return self._round_target
        p = self.pipeline
        missing = p.batch_size - len(self.batch_groups)
        if self.post_filter is None:
            target = missing
        elif self.post_filter == "dapo":
            dapo_params = p.selectors["dapo"].params
            target = math.ceil(dapo_params.gen_batch_factor * p.batch_size)  # type: ignore[attr-defined]
        else:
            history = p.history_filter
            assert history is not None
            hp = history.params
            assert isinstance(hp, GresoParams)
            zv_rate = float(history.state.get("zero_variance_rate", 0.0))
            # The refill floor (64 in the paper, for B in the hundreds) never exceeds B.
            target = greso.next_rollout_batch(
                missing, zv_rate, math.ceil(hp.rollout_batch_factor * p.batch_size),
                min(hp.min_rollout_batch, p.batch_size),
            )
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
        hive_sel = self.pipeline.selectors.get("hive")
        if hive_sel is not None:
            factor = hive_sel.params.pool_factor  # type: ignore[attr-defined]
            return max(1, math.ceil(factor * need) - len(self._pool))
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
        for name in ("lze", "hive", "greso"):
            sel = p.selectors.get(name)
            if sel is not None:
                sel.screen(self, keys, slots, keep)
        survivors = [k for k, kept in zip(keys, keep) if kept]
        self._pending.extend(audit)  # past every filter, HIVE's stage 2 included
        short = not self._can_draw_more()
        hive_sel = p.selectors.get("hive")
        if isinstance(hive_sel, Hive):
            self._pool.extend(survivors)
            pool_target = math.ceil(hive_sel.params.pool_factor * (self.round_target() - len(self._pending)))  # type: ignore[attr-defined]
            if len(self._pool) < pool_target and not short:
                return RolloutRound([], np.zeros(0, dtype=np.int64), [])
            gate_keys, self._pool = self._pool, []
            survivors = [k for k, ok in zip(gate_keys, hive_sel.verify(self, gate_keys, prompt_entropy)) if ok] \
                if gate_keys else []
        self._pending.extend(survivors)
        target = self.round_target()
        if len(self._pending) < target and not short:
            return RolloutRound([], np.zeros(0, dtype=np.int64), [])
        roll, deferred = self._pending[:target], self._pending[target:]
        self._pending = []
        self.candidates_deferred += len(deferred)
        self._round_target = 0
        hora_sel = p.selectors.get("hora")
        probe = hora_sel.params.n0 if hora_sel is not None else p.group_size  # type: ignore[attr-defined]
        return RolloutRound(roll, np.full(len(roll), probe, dtype=np.int64), deferred)

    def _can_draw_more(self) -> bool:
        """Whether drawing may go on after this draw (else roll out what is pending)."""
        return not (self._exhausted or self.candidates_drawn >= MAX_DRAW_FACTOR * self.pipeline.batch_size)

    # -- allocation -----------------------------------------------------------------------
    def allocate(self, round_: RolloutRound, probe_successes: Sequence[int]) -> np.ndarray:
        """Extra rollouts per prompt of the round: HORA's allocation, or none."""
        successes = np.asarray(probe_successes, dtype=np.int64)
        if successes.shape != (len(round_.keys),):
            raise ValueError(f"need one probe success count per prompt: {successes.shape} for {len(round_.keys)}")
        sel = self.pipeline.selectors.get("hora")
        if not isinstance(sel, Hora) or not round_.keys:
            return np.zeros(len(round_.keys), dtype=np.int64)
        return sel.allocate(self, round_.keys, successes)

    # -- post-rollout ---------------------------------------------------------------------
    def add_groups(self, outcomes: Sequence[GroupOutcome]) -> None:
        """Take a round's scored groups; the post-filter keeps mixed groups up to B."""
        self.rounds += 1
        B = self.pipeline.batch_size
        self.outcomes.extend(outcomes)
        owner = self.post_filter
        if owner is None:
            self.batch_groups.extend(outcomes)
            return
        verdicts = dapo.post_filter([o.zero_variance for o in outcomes], B - len(self.batch_groups))
        for outcome, verdict in zip(outcomes, verdicts):
            if verdict == dapo.KEEP:
                self.batch_groups.append(outcome)
            elif verdict == dapo.SURPLUS:
                self.decide(outcome.key, Layer.POST_ROLLOUT, owner, "dapo.surplus", {"batch": B})
            else:
                reason = "dapo.all_correct" if outcome.successes == outcome.size else "dapo.all_wrong"
                self.decide(outcome.key, Layer.POST_ROLLOUT, owner, reason, {"group_size": outcome.size})
        zero_variance = int((verdicts == dapo.ZERO_VARIANCE).sum())
        self.metric_add("post_filter/dropped_zero_variance", zero_variance)
        history = self.pipeline.history_filter
        if history is not None and outcomes:
            history.state["zero_variance_rate"] = zero_variance / len(outcomes)

    def finish(self) -> TrainingBatch:
        """Close collection; LZE backward selection picks the groups that enter the update."""
        self._finished = True
        groups = self.batch_groups
        B = self.pipeline.batch_size
        self.metrics["selection/groups_collected"] = float(len(groups))
        if len(groups) < B:
            # Always said, also after a drawing alert: a short step trains on fewer groups
            # than B and is not comparable to a full one.
            self.alerts.append(f"short batch: {len(groups)} of {B} groups collected for the update")
        lze_sel = self.pipeline.selectors.get("lze")
        if isinstance(lze_sel, Lze) and lze_sel.p.backward and groups:
            pass_rate = np.array([g.pass_rate for g in groups])
            chosen = lze_sel.select_for_update(self, pass_rate, [g.key for g in groups])
            groups = [g for g, ok in zip(groups, chosen) if ok]
        self.trained_groups = groups
        if not groups:
            empty = np.zeros(0)
            return TrainingBatch([], empty, np.zeros(0, dtype=np.int64), empty)
        rewards = np.concatenate([g.rewards for g in groups])
        sizes = np.array([g.size for g in groups])
        group_index = np.repeat(np.arange(len(groups)), sizes)
        weights = self.pipeline.group_size / sizes[group_index]
        return TrainingBatch(groups, rewards, group_index, weights.astype(np.float64))

    def advantages(self, batch: TrainingBatch, token_entropy: np.ndarray | None, response_mask: np.ndarray) -> np.ndarray:
        """(rollouts, tokens) advantages of the training batch, or of a mini-batch of whole
        groups (``batch.subset``): GRPO, or RL-ZVP when chosen. Call once per group."""
        mask = np.asarray(response_mask)
        if not batch.groups:
            return np.zeros((0, mask.shape[-1] if mask.ndim == 2 else 0))
        sel = self.pipeline.advantage_selector
        out = sel.token_advantages(self, batch, token_entropy, mask)
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
            sel.after_step(self)
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
        observations = []
        for outcome, bucket in zip(outcomes, buckets):
            observations.append({
                "prompt_key": outcome.key,
                "group_size": outcome.size,
                "successes": outcome.successes,
                "pass_rate": outcome.pass_rate,
                "response_entropy": outcome.mean_entropy,
                "prompt_entropy": self.prompt_entropy.get(outcome.key, float("nan")),
                "energy": self.lze_energy.get(outcome.key, float("nan")),
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

