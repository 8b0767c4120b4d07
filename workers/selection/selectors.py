"""One selector object per method, each implementing only the layer hooks it needs.

The pipeline (pipeline.py) calls the hooks in layer order; the math lives in the
method modules (greso, hive, hora, lze, rlzvp, grpo). Hooks receive the step in progress
(``StepSelection``) for its ledger, random generator and decision list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workers.selection import greso, grpo, hive, hora, lze, rlzvp
from workers.selection.decisions import Decision, Layer
from workers.selection.panels import Panel, Series
from workers.selection.params import (
    DapoParams,
    GresoParams,
    GrpoParams,
    HiveParams,
    HoraParams,
    LzeParams,
    MethodParams,
    RlzvpParams,
)

if TYPE_CHECKING:
    from workers.selection.pipeline import Pipeline, StepSelection, TrainingBatch

PromptEntropyFn = Callable[[list[str]], np.ndarray]


class Selector:
    name: ClassVar[str]
    label: ClassVar[str]  # as a person reads it: chart legends, form checkboxes
    help: ClassVar[str]
    layers: ClassVar[frozenset[Layer]]
    Params: ClassVar[type[MethodParams]]
    panels: ClassVar[tuple[Panel, ...]] = ()  # the run page's charts of this method

    def __init__(self, params: MethodParams, pipeline: Pipeline) -> None:
        self.params = params
        self.pipeline = pipeline

    # Every hook is optional; the pipeline calls those of the layers a selector declares.
    def screen(self, step: StepSelection, keys: list[str], slots: np.ndarray, keep: np.ndarray) -> None:
        """Pre-rollout, from history: clear ``keep`` for candidates not worth a rollout."""

    def after_step(self, step: StepSelection) -> None:
        """Once the step's groups are observed: update controllers and small state."""

    def start_epoch(self, epoch: int) -> list[Decision]:
        return []

    def end_epoch(self, epoch: int) -> list[Decision]:
        return []

    def metrics(self) -> dict[str, float]:
        """Method-specific figures of the step just closed (dashboard panels)."""
        return {}

    @property
    def state(self) -> dict[str, Any]:
        """Small per-method state, stored in the ledger so checkpoints carry it."""
        return self.pipeline.ledger.method_state.setdefault(self.name, {})


class Grpo(Selector):
    name = "grpo"
    label = "GRPO"
    help = "Group-relative advantages; the baseline every other method is measured against."
    layers = frozenset({Layer.ADVANTAGE})
    Params = GrpoParams

    def token_advantages(self, step: StepSelection, batch: TrainingBatch, token_entropy: np.ndarray | None,
                         response_mask: np.ndarray) -> np.ndarray:
        p = self.params
        assert isinstance(p, GrpoParams)
        advantages = grpo.group_advantages(batch.rewards, batch.group_index, p.norm_by_std, p.eps)
        return grpo.broadcast_to_tokens(advantages, response_mask)


class Dapo(Selector):
    name = "dapo"
    label = "DAPO dynamic sampling"
    help = "Drops groups whose rollouts all agree and draws more prompts until B groups carry signal."
    layers = frozenset({Layer.POST_ROLLOUT})
    Params = DapoParams
    panels = (Panel("dropped", "Zero-variance groups dropped", (
        Series("groups dropped", metric="post_filter/dropped_zero_variance", style="bar"),)),)


class Greso(Selector):
    name = "greso"
    label = "GRESO"
    help = "Skips prompts that were solved (or failed) on every recent visit, with a keep probability."
    layers = frozenset({Layer.PRE_ROLLOUT})
    Params = GresoParams
    reason_prefix = "greso."
    panels = (Panel("bases", "Keep-probability bases", (
        Series("p_easy (solved prompts)", metric="greso/p_easy"),
        Series("p_hard (failed prompts)", metric="greso/p_hard")), unit="share"),)

    def controller(self) -> greso.Controller:
        p = self.params
        assert isinstance(p, GresoParams)
        state = self.state
        return greso.Controller(
            p_easy=state.get("p_easy", p.p_easy),
            p_hard=state.get("p_hard", p.p_hard),
            alpha_easy=p.target_easy,
            alpha_hard=p.target_hard,
        )

    def history_scores(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        ledger = self.pipeline.ledger
        control = self.controller()
        p = self.params
        assert isinstance(p, GresoParams)
        easy = ledger.column("trailing_easy")[slots]
        hard = ledger.column("trailing_hard")[slots]
        return {
            "easy": easy,
            "hard": hard,
            "visits": ledger.column("visits")[slots],
            "pass_rate": ledger.column("last_pass_rate")[slots],
            "s_rew": greso.keep_probability(easy, hard, control.p_easy, control.p_hard, p.floor),
        }

    def screen(self, step: StepSelection, keys: list[str], slots: np.ndarray, keep: np.ndarray) -> None:
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return
        scores = self.history_scores(slots[idx])
        keep_probability = self.keep_probability(scores, slots[idx])
        draw = step.rng.random(idx.size)
        kept = draw < keep_probability
        keep[idx[~kept]] = False
        self.record(step, [keys[i] for i in idx], scores, keep_probability, draw, kept)

    def keep_probability(self, scores: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        return scores["s_rew"]

    def record(self, step: StepSelection, keys: list[str], scores: dict[str, np.ndarray],
               keep_probability: np.ndarray, draw: np.ndarray, kept: np.ndarray) -> None:
        for i, key in enumerate(keys):
            easy, hard = int(scores["easy"][i]), int(scores["hard"][i])
            if easy:
                reason, numbers = ("easy_kept" if kept[i] else "easy_skipped"), {"streak": easy}
            elif hard:
                reason, numbers = ("hard_kept" if kept[i] else "hard_skipped"), {"streak": hard}
            elif scores["visits"][i] == 0:
                reason, numbers = "unseen", {}
            else:
                reason, numbers = "mixed", {"pass_rate": float(scores["pass_rate"][i])}
            numbers.update(keep_probability=float(keep_probability[i]), draw=float(draw[i]))
            step.decide(key, Layer.PRE_ROLLOUT, self.name, "greso." + reason, numbers)

    def after_step(self, step: StepSelection) -> None:
        # The controller starts after the first epoch, once every prompt has history.
        if step.epoch < 1 or not step.groups_generated:
            return
        control = self.controller()
        n = step.groups_generated
        control.update(step.groups_all_correct / n, step.groups_all_wrong / n)
        self.state.update(p_easy=control.p_easy, p_hard=control.p_hard)

    def metrics(self) -> dict[str, float]:
        control = self.controller()
        return {f"{self.name}/p_easy": control.p_easy, f"{self.name}/p_hard": control.p_hard}


class Hive(Greso):
    name = "hive"
    label = "HIVE"
    help = ("Stage 1 skips prompts by history like GRESO; stage 2 keeps those whose prompt entropy "
            "under the current model is at least the median.")
    Params = HiveParams
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

    def keep_probability(self, scores: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        p = self.params
        assert isinstance(p, HiveParams)
        scores["s_ent"] = hive.entropy_score(self.pipeline.ledger.mean_response_entropy(slots))
        return hive.stage1_keep_probability(scores["s_rew"], scores["s_ent"], p.lam)

    def record(self, step: StepSelection, keys: list[str], scores: dict[str, np.ndarray],
               keep_probability: np.ndarray, draw: np.ndarray, kept: np.ndarray) -> None:
        step.metric_add("hive/stage1_candidates", len(keys))
        step.metric_add("hive/stage1_kept", int(kept.sum()))
        for i, key in enumerate(keys):
            step.decide(key, Layer.PRE_ROLLOUT, self.name, "hive.stage1_kept" if kept[i] else "hive.stage1_skipped", {
                "s_rew": float(scores["s_rew"][i]),
                "s_ent": float(scores["s_ent"][i]),
                "keep_probability": float(keep_probability[i]),
                "draw": float(draw[i]),
            })

    def verify(self, step: StepSelection, keys: list[str], prompt_entropy: PromptEntropyFn | None) -> np.ndarray:
        """Stage 2: gate the pooled stage-1 survivors on the current policy's prompt entropy."""
        if prompt_entropy is None:
            raise ValueError("HIVE stage 2 needs the engine's prompt_entropy function (a forward pass)")
        p = self.params
        assert isinstance(p, HiveParams)
        values = np.asarray(prompt_entropy(keys), dtype=np.float64)
        if values.shape != (len(keys),):
            raise ValueError(f"prompt_entropy returned shape {values.shape} for {len(keys)} prompts")
        keep = hive.entropy_gate(values, p.gate, p.k_off, p.k_keep)
        lower, upper = hive.gate_threshold(values, p.gate, p.k_off, p.k_keep)
        slots = self.pipeline.ledger.slots(keys)
        self.pipeline.ledger.set_prompt_entropy(slots, values)
        step.prompt_entropy.update(zip(keys, values.tolist()))
        step.metric_add("hive/stage2_candidates", len(keys))
        step.metric_add("hive/stage2_kept", int(keep.sum()))
        step.metrics["hive/entropy_threshold"] = lower
        for key, value, kept in zip(keys, values, keep):
            if p.gate == "median":
                reason = "hive.stage2_kept" if kept else "hive.stage2_skipped"
                numbers = {"entropy": value, "threshold": lower, "candidates": len(keys)}
            else:
                reason = "hive.band_kept" if kept else "hive.band_skipped"
                numbers = {"entropy": value, "lower": lower, "upper": upper, "candidates": len(keys)}
            step.decide(key, Layer.PRE_ROLLOUT, self.name, reason, numbers)
        return keep

    def after_step(self, step: StepSelection) -> None:
        super().after_step(step)
        pairs = [(step.prompt_entropy[o.key], o.mean_entropy) for o in step.outcomes if o.key in step.prompt_entropy]
        correlation = hive.RunningPearson()
        if "pearson" in self.state:
            correlation.load_state_dict(self.state["pearson"])
        if pairs:
            x, y = zip(*pairs)
            correlation.add(x, y)
        self.state["pearson"] = correlation.state_dict()
        step.metrics["hive/entropy_correlation"] = correlation.value


class Hora(Selector):
    name = "hora"
    label = "HORA"
    help = "Probes each prompt with n0 rollouts, then spends the rest of the budget where a first hit is likeliest."
    layers = frozenset({Layer.ALLOCATION})
    Params = HoraParams
    panels = (Panel("allocation", "Extra rollouts allocated by probe successes", view="hora_allocation", wide=True),)

    def allocate(self, step: StepSelection, keys: list[str], successes: np.ndarray) -> np.ndarray:
        p = self.params
        assert isinstance(p, HoraParams)
        n_extra = self.pipeline.group_size - p.n0
        extra = np.zeros(len(keys), dtype=np.int64)
        for shard in np.array_split(np.arange(len(keys)), min(p.shards, max(len(keys), 1))):
            if shard.size:
                extra[shard] = hora.allocate(successes[shard], p.n0, n_extra * shard.size,
                                             (p.prior_alpha, p.prior_beta))
        a, b = hora.posterior(successes, p.n0, (p.prior_alpha, p.prior_beta))
        for i, key in enumerate(keys):
            step.decide(key, Layer.ALLOCATION, self.name, "hora.allocated", {
                "successes": int(successes[i]),
                "probe": p.n0,
                "posterior_mean": float(a[i] / (a[i] + b[i])),
                "extra": int(extra[i]),
                "group_size": int(p.n0 + extra[i]),
            })
        return extra


class Rlzvp(Selector):
    name = "rlzvp"
    label = "RL-ZVP"
    help = "Gives zero-variance groups an entropy-shaped advantage instead of none."
    layers = frozenset({Layer.ADVANTAGE})
    Params = RlzvpParams
    panels = (Panel("shaped", "Share of trained rollouts shaped", (
        Series("shaped share of trained rollouts", metric="rlzvp/shaped_rollouts", per="rollouts_trained"),),
        unit="share"),)

    def token_advantages(self, step: StepSelection, batch: TrainingBatch, token_entropy: np.ndarray | None,
                         response_mask: np.ndarray) -> np.ndarray:
        p = self.params
        assert isinstance(p, RlzvpParams)
        if token_entropy is None:
            raise ValueError("RL-ZVP needs the per-token entropies of the loss forward pass")
        rewards, group_index = batch.rewards, batch.group_index
        advantages = rlzvp.token_advantages(rewards, group_index, token_entropy, response_mask,
                                            p.alpha, p.norm_by_std, p.eps)
        shaped = rlzvp.shaped_rollouts(rewards, group_index)
        mask = np.asarray(response_mask, dtype=bool)
        for g in np.unique(group_index[shaped]):
            rows = group_index == g
            outcome = batch.groups[int(g)]
            all_correct = bool(rewards[rows][0] >= 0.5)
            step.decide(outcome.key, Layer.ADVANTAGE, self.name,
                        "rlzvp.all_correct" if all_correct else "rlzvp.all_wrong", {
                            "group_size": int(rows.sum()),
                            "mean_advantage": float(advantages[rows][mask[rows]].mean()) if mask[rows].any() else 0.0,
                        })
        step.metric_add("rlzvp/shaped_rollouts", float(shaped.sum()))
        return advantages


class Lze(Selector):
    name = "lze"
    label = "LZE"
    help = "Updates only on the groups with the highest learning-zone energy; optionally prunes solved prompts."
    layers = frozenset({Layer.PRE_ROLLOUT, Layer.POST_ROLLOUT})
    Params = LzeParams
    panels = (
        Panel("energy", "Energy distribution at the newest step", view="lze_energy"),
        Panel("pool", "Selected share and pruned pool", (
            Series("pruned pool (prompts)", metric="lze/pruned_pool"),
            Series("replayed", decision="lze.replayed", style="bar"),
            Series("restored", decision="lze.restored", style="bar"),
            Series("selected share", metric="lze/selected_share", axis="right"))),
    )

    @property
    def p(self) -> LzeParams:
        assert isinstance(self.params, LzeParams)
        return self.params

    # -- forward pruner -----------------------------------------------------------------
    def screen(self, step: StepSelection, keys: list[str], slots: np.ndarray, keep: np.ndarray) -> None:
        if not self.p.prune:
            return
        ledger = self.pipeline.ledger
        replaying = set(self.state.get("replaying", []))
        pruned = ledger.column("pruned")[slots]
        streak = ledger.column("epoch_streak")[slots]
        for i in np.flatnonzero(pruned & keep):
            if keys[i] in replaying:
                continue
            keep[i] = False
            step.decide(keys[i], Layer.PRE_ROLLOUT, self.name, "lze.skipped_pruned", {"streak": int(streak[i])})

    def start_epoch(self, epoch: int) -> list[Decision]:
        if not self.p.prune:
            return []
        ledger = self.pipeline.ledger
        pool = np.flatnonzero(ledger.column("pruned"))
        count = lze.replay_count(pool.size, self.p.replay_ratio)
        if count == 0:
            return []
        chosen = np.sort(self.pipeline.rng.choice(pool, size=count, replace=False))
        keys = [ledger.key_of(int(s)) for s in chosen]
        self.state["replaying"] = sorted(set(self.state.get("replaying", [])) | set(keys))
        return [Decision(self.pipeline.step, key, Layer.PRE_ROLLOUT, self.name, "lze.replayed", {"pool": pool.size})
                for key in keys]

    def end_epoch(self, epoch: int) -> list[Decision]:
        if not self.p.prune:
            return []
        ledger = self.pipeline.ledger
        seen = ledger.close_epoch(epoch)
        streak = ledger.column("epoch_streak")[seen]
        pruned = ledger.column("pruned")[seen]
        newly = seen[(streak >= self.p.t_prune) & ~pruned]
        ledger.set_pruned(newly, True)
        return [Decision(self.pipeline.step, ledger.key_of(int(s)), Layer.PRE_ROLLOUT, self.name, "lze.pruned",
                         {"streak": int(ledger.column("epoch_streak")[s])}) for s in newly]

    def after_step(self, step: StepSelection) -> None:
        replaying = set(self.state.get("replaying", []))
        if not replaying:
            return
        ledger = self.pipeline.ledger
        for outcome in step.outcomes:
            if outcome.key not in replaying:
                continue
            replaying.discard(outcome.key)
            p = outcome.pass_rate
            slot = ledger.slots([outcome.key])
            if p < 1.0:
                ledger.set_pruned(slot, False)
                step.decide(outcome.key, Layer.PRE_ROLLOUT, self.name, "lze.restored", {"pass_rate": p})
            else:
                step.decide(outcome.key, Layer.PRE_ROLLOUT, self.name, "lze.still_solved", {"pass_rate": p})
        self.state["replaying"] = sorted(replaying)

    # -- backward selection -------------------------------------------------------------
    def select_for_update(self, step: StepSelection, pass_rate: np.ndarray, keys: list[str]) -> np.ndarray:
        """Mask over the batch's groups: the top-K live groups by perturbed energy."""
        ledger = self.pipeline.ledger
        slots = ledger.slots(keys)
        p0 = ledger.column("p0")[slots]
        ema = ledger.column("ema")[slots]
        p0 = np.where(np.isnan(p0), pass_rate, p0)
        ema = np.where(np.isnan(ema), p0, ema)
        energy = lze.energy(pass_rate, p0, ema, self.p.momentum_weight, self.p.d_init_min, self.p.momentum)
        live = (pass_rate > 0) & (pass_rate < 1)
        if step.epoch < self.p.warmup_epochs:  # warm-up epochs train on every live group
            chosen = live.copy()
            k = int(live.sum())
        else:
            chosen = lze.select(energy, live, self.p.kappa, self.p.min_ratio, self.p.noise, rng=step.rng)
            k = int(chosen.sum())
        order = np.argsort(-np.where(live, energy, -np.inf), kind="stable")
        rank = np.empty(len(keys), dtype=np.int64)
        rank[order] = np.arange(1, len(keys) + 1)
        for i, key in enumerate(keys):
            if not live[i]:
                step.decide(key, Layer.POST_ROLLOUT, self.name, "lze.zero_variance", {"pass_rate": float(pass_rate[i])})
                continue
            step.decide(key, Layer.POST_ROLLOUT, self.name, "lze.selected" if chosen[i] else "lze.not_selected", {
                "energy": float(energy[i]), "rank": int(rank[i]), "live": int(live.sum()), "k": k,
            })
        step.metrics["lze/energy_mean"] = float(energy[live].mean()) if live.any() else 0.0
        step.metrics["lze/selected_share"] = float(chosen.sum() / len(keys)) if keys else 0.0
        step.lze_energy = dict(zip(keys, energy.tolist()))
        return chosen

    def metrics(self) -> dict[str, float]:
        return {
            "lze/pruned_pool": float(self.pipeline.ledger.column("pruned").sum()),
            "lze/replaying": float(len(self.state.get("replaying", []))),
        }


REGISTRY: dict[str, type[Selector]] = {
    cls.name: cls for cls in (Grpo, Dapo, Greso, Hive, Hora, Rlzvp, Lze)
}
