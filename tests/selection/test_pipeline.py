import json

import numpy as np
import pytest

from tests.selection.simulated import Simulation, simulate
from workers.record import StepRecord
from workers.selection.decisions import Action, Decision, Layer
from workers.selection.params import SelectionConfigError
from workers.selection.pipeline import Pipeline

B, N = 8, 8


def decisions_of(results, **match):
    return [d for r, _ in results for d in r.decisions if all(getattr(d, k) == v for k, v in match.items())]


# -- composition --------------------------------------------------------------------------


def test_an_unknown_method_fails_listing_the_valid_ones():
    with pytest.raises(SelectionConfigError,
                       match="unknown method 'gspo'; valid methods are grpo, dapo, greso, hive, hora, rlzvp, lze"):
        Pipeline(["gspo"], batch_size=B, group_size=N)


@pytest.mark.parametrize(
    ("methods", "field", "fix"),
    [
        (["greso", "hive"], "selectors", "keep one of them"),
        (["grpo", "rlzvp"], "selectors", "drop grpo"),
        (["dapo", "rlzvp"], "selectors", "choose one"),
        (["lze", "rlzvp"], "lze.backward",
         r"drop lze or rlzvp, or turn LZE.s pruner on \(lze.prune = true\) and set lze.backward = false"),
        ({"lze": {"prune": True}, "rlzvp": {}}, "lze.backward", r"set lze.backward = false \(LZE keeps its pruner\)"),
        ({"hive": {"post_filter": "on"}, "rlzvp": {}}, "hive.post_filter", "set it to auto or off"),
        ({"greso": {"post_filter": "off"}, "dapo": {}}, "greso.post_filter", "remove dapo"),
        ({"hora": {"n0": 8}}, "hora.n0", "lower hora.n0 or raise N"),
        ({"hora": {"n0": 0}}, "hora.n0", "must be >= 1"),
        ({"lze": {"kappa": 1.5}}, "lze.kappa", r"must be <= 1, got 1.5 \(range \[0.01, 1\]\)"),
        ({"lze": {"backward": False}}, "lze.backward", "LZE does nothing: set lze.backward = true"),
        ({"hive": {"gate": "mean"}}, "hive.gate", "must be median or band"),
        ({"rlzvp": {"alhpa": 0.1}}, "rlzvp.alhpa", "unknown parameter; rlzvp takes alpha, eps, norm_by_std"),
        (["grpo", "grpo"], "selectors", "listed twice"),
    ],
)
def test_impossible_compositions_say_which_field_to_change(methods, field, fix):
    with pytest.raises(SelectionConfigError, match=fix) as error:
        Pipeline(methods, batch_size=B, group_size=N)
    assert error.value.field == field


def test_batch_and_group_sizes_are_checked():
    with pytest.raises(SelectionConfigError, match="N must be >= 2"):
        Pipeline(["grpo"], batch_size=B, group_size=1)
    with pytest.raises(SelectionConfigError, match="B must be >= 1"):
        Pipeline(["grpo"], batch_size=0, group_size=N)


def test_lze_pruner_alone_composes_with_rlzvp():
    pipeline = Pipeline({"lze": {"backward": False, "prune": True}, "rlzvp": {}}, batch_size=B, group_size=N)
    assert pipeline.methods() == ["lze", "rlzvp"]


# -- each method at its layer -------------------------------------------------------------


def assert_consistent(results):
    for result, advantages in results:
        acc = result.accounting
        sizes = [o["group_size"] for o in result.observations]
        assert acc.rollouts_generated == sum(sizes)
        assert acc.groups_generated == len(result.observations)
        assert acc.rollouts_uniform == B * N
        assert acc.rollout_savings == pytest.approx(1 - acc.rollouts_generated / (B * N))
        assert acc.rollouts_trained == advantages.shape[0]
        assert acc.rollouts_effective == int((np.abs(advantages) > 0).any(axis=1).sum())
        assert acc.groups_trained == sum(o["trained"] for o in result.observations)
        for d in result.decisions:
            assert d.message  # renders from its scores


def assert_every_skip_has_a_decision(sim, results):
    for log, (result, _) in zip(sim.logs, results):
        skipped = {d.prompt_key for d in result.decisions if d.action is Action.SKIPPED}
        rolled = set(log["rolled"])
        deferred = set(log["deferred"])
        for key in set(log["drawn"]) - rolled - deferred:
            assert key in skipped, f"{key} was drawn, not rolled out, and has no skip decision"


def test_plain_grpo_trains_on_b_groups_of_n_and_decides_nothing():
    _, results, _ = simulate(["grpo"], 10)
    assert_consistent(results)
    assert all(r.accounting.rollouts_generated == B * N and not r.decisions for r, _ in results)


def test_dapo_refills_to_b_mixed_groups_and_drops_every_zero_variance_group():
    _, results, _ = simulate(["dapo"], 10)
    assert_consistent(results)
    for result, _ in results:
        trained = [o for o in result.observations if o["trained"]]
        assert len(trained) == B and all(0 < o["pass_rate"] < 1 for o in trained)
        dropped = {d.prompt_key for d in result.decisions if d.action is Action.DROPPED}
        untrained = {o["prompt_key"] for o in result.observations if not o["trained"]}
        assert untrained == dropped
        assert result.accounting.rollouts_generated >= 3 * B * N  # one generation batch is 3B prompts


def test_dapo_stops_at_max_gen_batches_with_an_alert_and_trains_on_what_it_has():
    pipeline = Pipeline({"dapo": {"max_gen_batches": 1, "gen_batch_factor": 1}}, batch_size=B, group_size=N)
    sim = Simulation(None, pipeline=pipeline)
    for key in sim.rates:
        sim.rates[key] = 1.0 if key != "p0001" else 0.5  # almost everything is solved
    result, _ = sim.run(1)[0]
    assert result.accounting.groups_trained < B
    assert "stopped drawing after 1 generation rounds" in result.alerts[0]


@pytest.mark.parametrize("method", ["greso", "hive"])
def test_history_filters_skip_with_a_reason_and_still_fill_the_batch(method):
    sim = Simulation([method])
    results = sim.run(40)
    assert_consistent(results)
    assert_every_skip_has_a_decision(sim, results)
    assert all(r.accounting.groups_trained == B for r, _ in results)
    skipped = decisions_of(results, method=method, action=Action.SKIPPED)
    assert skipped, "the filter never skipped anything in 40 steps"
    late = [r for r, _ in results[20:]]
    assert any(r.metrics[f"{method}/p_easy"] != 0.5 for r in late)  # the controller moved


def test_hive_stage2_gates_at_the_median_of_its_pool():
    sim = Simulation(["hive"])
    results = sim.run(12)
    gated = decisions_of(results, reason="hive.stage2_skipped") + decisions_of(results, reason="hive.stage2_kept")
    assert gated
    for d in gated:
        assert (d.scores["entropy"] >= d.scores["threshold"]) == (d.action is Action.KEPT)
    assert "median" in decisions_of(results, reason="hive.stage2_skipped")[0].message
    assert sim.engine.forward_tokens == 0 and results[-1][0].accounting.forward_tokens_extra > 0


def test_hora_spends_exactly_b_times_n_rollouts_in_variable_groups():
    _, results, _ = simulate({"hora": {"n0": 4}}, 10)
    assert_consistent(results)
    for result, _ in results:
        sizes = [o["group_size"] for o in result.observations]
        assert sum(sizes) == B * N and min(sizes) >= 4
        assert len(decisions_of([(result, None)], action=Action.ALLOCATED)) == B
    assert len({o["group_size"] for r, _ in results for o in r.observations}) > 1


def test_hora_weights_each_prompt_equally_in_the_loss():
    pipeline = Pipeline({"hora": {"n0": 4}}, batch_size=B, group_size=N)
    sim = Simulation(None, pipeline=pipeline)
    sel = pipeline.begin_step(0, 0)
    round_ = sel.pre_rollout(sim.loader.take(sel.request_size()))
    probes = [sim.engine.generate(k, 4) for k in round_.keys]
    extra = sel.allocate(round_, [int(r.sum()) for r, _ in probes])
    from workers.selection.pipeline import GroupOutcome
    sel.add_groups([GroupOutcome(k, np.r_[r, np.zeros(m)], np.ones(4 + m))
                    for k, (r, _), m in zip(round_.keys, probes, extra)])
    batch = sel.finish()
    per_prompt = np.bincount(batch.group_index, weights=batch.rollout_weights)
    np.testing.assert_allclose(per_prompt, N)


def test_rlzvp_gives_zero_variance_groups_non_zero_advantages():
    _, results, _ = simulate(["rlzvp"], 10)
    assert_consistent(results)
    shaped = decisions_of(results, method="rlzvp", action=Action.SHAPED)
    assert shaped
    _, plain, _ = simulate(["grpo"], 10)
    with_zvp = sum(r.accounting.rollouts_effective for r, _ in results)
    without = sum(r.accounting.rollouts_effective for r, _ in plain)
    assert with_zvp > without  # same seed, same draws: the ZV groups now carry signal


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_lze_updates_on_kappa_b_groups_from_the_first_step_or_after_its_warmup_epochs(warmup_epochs):
    sim = Simulation({"lze": {"warmup_epochs": warmup_epochs}}, n_prompts=32)
    results = sim.run(20)
    assert_consistent(results)
    assert results[0][0].epoch == 0
    for result, _ in results:
        live = sum(0 < o["pass_rate"] < 1 for o in result.observations)
        expected = live if result.epoch < warmup_epochs else min(int(0.4 * B), live)
        assert result.accounting.groups_trained == expected
        selected = [d for d in result.decisions if d.action is Action.SELECTED]
        assert len(selected) == result.accounting.groups_trained
    if warmup_epochs == 0:  # selection binds from step 0 whenever more than K groups are live
        first, _ = results[0]
        assert sum(0 < o["pass_rate"] < 1 for o in first.observations) > int(0.4 * B)


def test_lze_prunes_prompts_solved_two_epochs_running_then_replays_and_restores_forgotten_ones():
    sim = Simulation({"lze": {"prune": True}}, n_prompts=32)
    results = sim.run(40)
    pruned = decisions_of(results, action=Action.PRUNED, reason="lze.pruned")
    assert pruned and all(sim.rates[d.prompt_key] >= 0.95 for d in pruned)
    assert decisions_of(results, reason="lze.skipped_pruned")
    assert decisions_of(results, reason="lze.replayed")
    # The model forgets every pruned prompt: the next replays must restore them.
    for d in pruned:
        sim.rates[d.prompt_key] = 0.0
    later = sim.run(40)
    restored = decisions_of(later, reason="lze.restored")
    assert restored and all(d.scores["pass_rate"] < 1 for d in restored)
    ledger = sim.pipeline.ledger
    assert not ledger.column("pruned")[ledger.slots([d.prompt_key for d in restored])].any()


def test_hive_hora_rlzvp_compose_at_their_three_layers():
    sim = Simulation({"hive": {}, "hora": {"n0": 4}, "rlzvp": {}})
    results = sim.run(30)
    assert_consistent(results)
    assert_every_skip_has_a_decision(sim, results)
    layers = {d.layer for r, _ in results for d in r.decisions}
    assert {Layer.PRE_ROLLOUT, Layer.ALLOCATION, Layer.ADVANTAGE} <= layers
    for result, _ in results:
        assert sum(o["group_size"] for o in result.observations) == B * N  # no post-filter, no refill
    assert decisions_of(results, method="rlzvp", action=Action.SHAPED)
    assert not decisions_of(results, action=Action.DROPPED)  # rlzvp turned the post-filter off


# -- checkpoints and decisions ----------------------------------------------------------------


def test_a_restored_pipeline_decides_exactly_as_an_uninterrupted_one(tmp_path):
    import copy

    methods = {"hive": {}, "hora": {"n0": 4}, "rlzvp": {}}
    straight = Simulation(methods)
    first = straight.run(24)

    resumed = Simulation(methods)
    head = resumed.run(12)
    resumed.pipeline.save(tmp_path / "selection.npz")
    loader, engine = copy.deepcopy(resumed.loader), copy.deepcopy(resumed.engine)
    restarted = Simulation(None, pipeline=Pipeline.load(tmp_path / "selection.npz", methods,
                                                        batch_size=B, group_size=N))
    restarted.loader, restarted.engine, restarted.step, restarted.epoch = loader, engine, resumed.step, resumed.epoch
    tail = restarted.run(12)

    def records(results):  # the step records the engines send, as wire JSON
        return json.dumps([StepRecord.from_result(r, train={}).to_wire() for r, _ in results])

    assert records(head + tail) == records(first)


def test_decision_messages_read_as_one_line_reasons():
    d = Decision(7, "math:12", Layer.PRE_ROLLOUT, "hive", "hive.stage2_skipped",
                 {"entropy": 0.41, "threshold": 0.57, "candidates": 384})
    assert d.message == "skipped by HIVE stage 2: prompt entropy 0.410 < median 0.570 of 384 candidates"
    assert d.to_record()["action"] == "skipped"
    with pytest.raises(ValueError, match="unknown decision reason"):
        Decision(7, "k", Layer.PRE_ROLLOUT, "hive", "hive.because", {})


def test_advantages_by_mini_batches_of_whole_groups_equal_the_whole_batch():
    pipeline = Pipeline(["rlzvp"], batch_size=B, group_size=N)
    whole = Simulation(None, pipeline=pipeline)
    sel = pipeline.begin_step(0, 0)
    round_ = sel.pre_rollout(whole.loader.take(sel.request_size()))
    from workers.selection.pipeline import GroupOutcome
    rng = np.random.default_rng(0)
    sel.add_groups([GroupOutcome(k, (rng.random(N) < whole.rates[k]).astype(float), np.full(N, 3))
                    for k in round_.keys])
    batch = sel.finish()
    entropy = rng.random((B * N, 3))
    mask = np.ones((B * N, 3), bool)
    full = sel.advantages(batch, entropy, mask)
    effective_whole = sel.rollouts_effective
    sel.rollouts_effective = 0
    parts = np.zeros_like(full)
    rows = batch.group_rows()
    for chunk in ([0, 1, 2], [3, 4, 5, 6, 7]):
        sub = batch.subset(chunk)
        chunk_rows = np.concatenate([rows[i] for i in chunk])
        parts[chunk_rows] = sel.advantages(sub, entropy[chunk_rows], mask[chunk_rows])
    np.testing.assert_allclose(parts, full)
    assert sel.rollouts_effective == effective_whole
