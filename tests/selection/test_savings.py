"""The savings yardsticks of docs/savings.md, on synthetic prompts whose truth is known.

Every prompt of the Bernoulli simulation has a fixed pass rate p, so a uniformly drawn
group of N rollouts is mixed with probability 1 - p^N - (1 - p)^N, and dynamic sampling
needs N / q rollouts per mixed group on average, where q is that probability averaged
over the pool.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.selection.simulated import Simulation
from workers.selection.accounting import RunTotals, StepAccounting
from workers.selection.decisions import Action
from workers.selection.pipeline import AUDIT_MIN_GROUPS, AUDIT_WINDOW_GROUPS, GroupOutcome, Pipeline

N = 8


def true_mixed_rate(rates: dict[str, float], group_size: int = N) -> float:
    p = np.array(list(rates.values()))
    return float(np.mean(1 - p**group_size - (1 - p) ** group_size))


def run(methods, steps: int, **kwargs):
    sim = Simulation(methods, n_prompts=256, batch_size=16, group_size=N, **kwargs)
    results = [r for r, _ in sim.run(steps)]
    return sim, results, RunTotals.of(r.accounting for r in results)


def test_the_formulas_on_one_step_with_known_numbers():
    step = StepAccounting(
        step=0, rollouts_generated=96, tokens_generated=480, rollouts_effective=64, rollouts_trained=64,
        rollouts_uniform=64, groups_generated=12, groups_all_correct=2, groups_all_wrong=2, groups_trained=8,
        forward_tokens_extra=0, backward_tokens=320, parameters=10, prompt_tokens_generated=960,
        backward_prompt_tokens=640, groups_uniform=12, groups_uniform_mixed=8, mixed_rate_uniform=0.5,
        groups_mixed_collected=8, rollouts_dynamic_sampling=8 * N / 0.5, backward_tokens_mixed=400,
    )
    assert step.rollout_savings == pytest.approx(1 - 96 / 64)  # -50%: more than uniform GRPO
    assert step.rollout_savings_vs_dynamic_sampling == pytest.approx(1 - 96 / 128)  # +25% against DAPO
    assert step.backward_savings_vs_mixed == pytest.approx(1 - 320 / 400)
    # 2P per prefilled prompt token and generated token, 6P per trained token, prompts included
    assert step.flops_estimate == pytest.approx(2 * 10 * (480 + 960) + 6 * 10 * (320 + 640))
    assert step.flops_uniform_estimate == pytest.approx(8 * 10 * 64 * (480 + 960) / 96)


def test_no_estimate_yet_reads_as_none_not_as_zero():
    step = StepAccounting(step=0, rollouts_generated=8, tokens_generated=8, rollouts_effective=0, rollouts_trained=0,
                          rollouts_uniform=8, groups_generated=1, groups_all_correct=1, groups_all_wrong=0,
                          groups_trained=0, forward_tokens_extra=0, backward_tokens=0, parameters=1)
    assert step.rollout_savings_vs_dynamic_sampling is None
    assert step.backward_savings_vs_mixed is None


def test_the_window_pools_recent_steps_until_it_holds_enough_groups():
    pipeline = Pipeline(["grpo"], batch_size=4, group_size=N)
    assert math.isnan(pipeline.mixed_rate_uniform(0, 0)[0])
    assert math.isnan(pipeline.mixed_rate_uniform(10, 5)[0])  # fewer than AUDIT_MIN_GROUPS: no estimate
    for _ in range(10):
        rate, groups = pipeline.mixed_rate_uniform(10, 5)
    # the latest steps holding at least AUDIT_WINDOW_GROUPS groups, the oldest ones dropped
    held = math.ceil(AUDIT_WINDOW_GROUPS / 10)
    assert (rate, groups) == (pytest.approx(0.5), 10 * held)
    assert len(pipeline.audit_window) == held
    empty = Pipeline(["grpo"], batch_size=4, group_size=N)
    assert empty.mixed_rate_uniform(AUDIT_MIN_GROUPS, 0)[0] == pytest.approx(0.5 / AUDIT_MIN_GROUPS)


def test_dynamic_sampling_rollouts_correct_the_small_window_overshoot():
    pipeline = Pipeline(["grpo"], batch_size=4, group_size=N)
    # q_hat = 0.5 from 40 groups: N / q_hat divided by 1 + (1 - q) / (n q)
    assert pipeline.rollouts_dynamic_sampling(10, 0.5, 40) == pytest.approx(10 * N / 0.5 / (1 + 0.5 / 20))
    assert math.isnan(pipeline.rollouts_dynamic_sampling(10, math.nan, 0))
    # the correction is right on average: simulate windows of n groups at a true rate q
    rng = np.random.default_rng(0)
    q, n = 0.25, 40
    rates = rng.binomial(n, q, size=200_000) / n
    rates = rates[rates > 0]
    corrected = np.mean([N / r / (1 + (1 - r) / (n * r)) for r in rates[:20_000]])
    naive = np.mean(N / rates[:20_000])
    assert abs(corrected / (N / q) - 1) < abs(naive / (N / q) - 1) / 2


@pytest.mark.parametrize("methods", [["grpo"], ["greso"], ["hive"], {"lze": {"prune": True}}])
def test_uniform_draws_estimate_the_true_mixed_rate(methods):
    """Unfiltered runs use every group; filtered runs only their audit draws, which the
    filters never see - so both estimate the pool's true mixed rate without bias."""
    sim, results, _ = run(methods, 150)
    drawn = sum(r.accounting.groups_uniform for r in results)
    mixed = sum(r.accounting.groups_uniform_mixed for r in results)
    truth = true_mixed_rate(sim.rates)
    estimate = mixed / drawn
    standard_error = math.sqrt(truth * (1 - truth) / drawn)
    assert abs(estimate - truth) < 4 * standard_error + 0.02, (estimate, truth, drawn)
    if methods != ["grpo"]:  # filtered: about AUDIT_SHARE of the candidates, never screened
        audit = [d for r in results for d in r.decisions if d.reason == "audit.uniform"]
        assert audit and all(d.action is Action.KEPT for d in audit)
        drawn_candidates = sum(r.metrics["selection/candidates_drawn"] for r in results)
        assert 0.03 < len(audit) / drawn_candidates < 0.07


def test_uniform_grpo_saves_nothing_against_dynamic_sampling():
    _, _, grpo = run(["grpo"], 150)
    assert abs(grpo.rollout_savings_vs_dynamic_sampling) < 0.08


def test_dapo_is_charged_its_overshoot_beyond_ideal_dynamic_sampling():
    """Ideal dynamic sampling draws groups one by one until B are mixed; DAPO draws rounds of
    3B and drops what lies beyond the B-th mixed group. The estimate must match the ideal."""
    _, results, dapo = run(["dapo"], 150)
    ideal = 0
    for r in results:
        trained = [o["trained"] for o in r.observations]
        ideal += (max(i for i, t in enumerate(trained) if t) + 1) * N if any(trained) else 0
    estimated = dapo.rollouts_dynamic_sampling
    assert estimated == pytest.approx(ideal, rel=0.08)
    assert dapo.rollout_savings_vs_dynamic_sampling < 0  # it pays for the groups past the cut


def test_audit_draws_bypass_the_filters():
    """Prompts GRESO would skip almost surely: the audited ones still reach the rollout."""
    pipeline = Pipeline(["greso"], batch_size=64, group_size=N, audit_share=0.3)
    keys = [f"p{i}" for i in range(400)]
    for step in range(3):  # all-correct three times: GRESO's skip probability is high
        sel = pipeline.begin_step(step, 0)
        sel.pre_rollout(keys)
        sel.add_groups([GroupOutcome(k, np.ones(N), np.ones(N)) for k in keys])
        sel.finish()
        sel.close()
    sel = pipeline.begin_step(3, 0)
    sel.loader_exhausted()  # roll out whatever passed, not wait for more
    round_ = sel.pre_rollout(keys)
    audited = {d.prompt_key for d in sel.decisions if d.reason == "audit.uniform"}
    skipped = {d.prompt_key for d in sel.decisions if d.action is Action.SKIPPED}
    assert 0.2 < len(audited) / len(keys) < 0.4 and len(skipped) > 100
    assert not audited & skipped
    assert audited <= set(round_.keys) | set(round_.deferred)


def test_history_filters_save_rollouts_against_dynamic_sampling_once_they_know_the_pool():
    for methods in (["greso"], ["hive"]):
        _, results, _ = run(methods, 150)
        late = RunTotals.of(r.accounting for r in results[50:])
        assert late.rollout_savings_vs_dynamic_sampling > 0.15, methods


def test_lze_backward_savings_count_against_grpo_without_zero_advantage_groups():
    _, results, totals = run(["lze"], 40)
    for r in results:
        a = r.accounting
        assert a.backward_tokens <= a.backward_tokens_mixed  # LZE trains a subset of the mixed groups
        assert a.groups_trained <= a.groups_mixed_collected
        assert a.groups_trained == min(int(0.4 * 16), a.groups_mixed_collected)
    assert totals.backward_savings_vs_mixed > 0.05
    _, _, grpo = run(["grpo"], 40)
    # plain GRPO backpropagates its zero-variance groups too: more than the yardstick
    assert grpo.backward_tokens > grpo.backward_tokens_mixed


def test_no_audit_keeps_every_filter_strict_and_gives_no_dynamic_sampling_figure():
    """audit_share = 0: a user who wants the pruner and the filters to never let a prompt
    through pays with the yardstick: filtered runs then have no estimate (NaN, not 0)."""
    sim = Simulation(["greso"], n_prompts=256, batch_size=16, group_size=N,
                     pipeline=Pipeline(["greso"], batch_size=16, group_size=N, audit_share=0.0))
    results = [r for r, _ in sim.run(30)]
    assert not [d for r in results for d in r.decisions if d.reason == "audit.uniform"]
    assert all(r.accounting.groups_uniform == 0 for r in results)
    assert all(r.accounting.rollout_savings_vs_dynamic_sampling is None for r in results)


def test_the_audit_share_is_a_run_setting_checked_like_the_others():
    from workers.engines.config import ConfigError, RunConfig

    assert RunConfig.from_mapping({}).audit_share == 0.05
    with pytest.raises(ConfigError) as bad:
        RunConfig.from_mapping({"audit_share": 1.0})
    assert "audit_share" in bad.value.as_dict()


@pytest.mark.parametrize(("methods", "expected"), [
    ({"grpo": {}}, ["uniform"]),
    ({"dapo": {}}, ["uniform", "dynamic_sampling"]),
    ({"greso": {}}, ["uniform", "dynamic_sampling"]),
    ({"hive": {}, "hora": {"n0": 2}, "rlzvp": {}}, ["uniform", "dynamic_sampling", "uniform_budget"]),
    ({"lze": {}}, ["uniform", "backward_mixed"]),
    ({"lze": {"prune": True}}, ["uniform", "dynamic_sampling", "backward_mixed"]),
    ({"lze": {"prune": True, "backward": False}}, ["uniform", "dynamic_sampling"]),
    ({"hora": {"n0": 2}}, ["uniform", "uniform_budget"]),
])
def test_each_composition_is_measured_against_what_its_methods_layers_declare(methods, expected):
    assert Pipeline(methods, batch_size=4, group_size=N).yardsticks() == expected
