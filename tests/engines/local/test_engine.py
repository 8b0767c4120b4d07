"""The embedded engine trains for real: each method at its layer, composition, resume,
divergence, cancel, and the events it reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.record import TRAIN_FIELDS, Control, RunStatus, StepRecord
from workers.selection import hora

B, N = 8, 4


def steps_of(events):
    return [e for e in events if e["event"] == "step"]


def decisions(events, **match):
    return [d for e in steps_of(events) for d in e["decisions"] if all(d[k] == v for k, v in match.items())]


def weights(engine):
    return {k: v.detach().clone() for k, v in engine.policy.model.state_dict().items()}


def assert_complete(events, steps):
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert events[-1]["status"] == "succeeded"
    assert [e["step"] for e in steps_of(events)] == list(range(steps))
    assert "evaluation" in kinds and "checkpoint" in kinds
    for step in steps_of(events):
        # the file holds the record's wire form: it reads back, and every train stat is named
        assert step["version"] == 2 and StepRecord.from_wire(step).step == step["step"]  # rows: a log people read
        assert set(step["summary"]["train"]) == set(TRAIN_FIELDS)
        s = step["summary"]
        assert s["rollouts_generated"] == sum(o["group_size"] for o in step["observations"])
        assert s["groups_generated"] == len(step["observations"])
        assert s["rollouts_uniform"] == B * N
        assert s["seconds"]["generate"] > 0 and s["seconds"]["update"] >= 0
        assert np.isfinite(s["train"]["loss"])
        # every candidate drawn was rolled out, skipped with a decision, or given back
        skipped = [d for d in step["decisions"] if d["action"] == "skipped"]
        m = s["metrics"]
        assert m["selection/candidates_drawn"] == (s["groups_generated"] + len(skipped)
                                                   + m["selection/candidates_deferred"])
        for d in step["decisions"]:
            assert d["message"] and d["reason"] and d["prompt_key"].startswith("edgeplane/add:")


def test_plain_grpo_changes_the_weights_and_reports_every_step(run_tiny):
    _, status, events = run_tiny(selectors={"grpo": {}})
    assert status == RunStatus.SUCCEEDED
    assert_complete(events, 3)
    assert events[-1]["reason"] == "trained 3 steps"
    evaluation = [e for e in events if e["event"] == "evaluation"][-1]
    assert 0.0 <= evaluation["pass_at_1"] <= evaluation["pass_at_k"] <= 1.0
    assert set(evaluation["by_difficulty"]) <= {f"digits={k}" for k in range(1, 6)}


def test_the_update_moves_the_parameters(run_tiny, tmp_path, var_dir):
    from tests.engines.local.conftest import TINY
    from workers.engines.config import RunConfig
    from workers.engines.local.engine import LocalEngine
    from workers.engines.telemetry import JsonlSink

    engine = LocalEngine(RunConfig.from_mapping(TINY), tmp_path / "w", JsonlSink(tmp_path / "w"), var_dir=var_dir)
    engine._warm_up()
    before = weights(engine)
    engine.train_step()
    after = weights(engine)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_dapo_refills_with_more_generation_batches_and_trains_only_mixed_groups(run_tiny):
    _, _, events = run_tiny(selectors={"dapo": {"gen_batch_factor": 1, "max_gen_batches": 4}})
    assert_complete(events, 3)
    for step in steps_of(events):
        assert step["summary"]["groups_generated"] > B  # zero-variance groups forced a refill
        trained = [o for o in step["observations"] if o["trained"]]
        assert all(0 < o["pass_rate"] < 1 for o in trained)
    assert decisions(events, method="dapo", action="dropped")


@pytest.mark.parametrize("method", ["greso", "hive"])
def test_history_filters_skip_prompts_with_a_reason_once_they_have_history(run_tiny, method):
    _, _, events = run_tiny(selectors={method: {"min_rollout_batch": 4}}, steps=6)
    assert_complete(events, 6)
    assert decisions(events, method=method, action="skipped")


def test_hive_stage2_runs_a_forward_pass_over_the_prompts(run_tiny):
    _, _, events = run_tiny(selectors={"hive": {}})
    assert decisions(events, reason="hive.stage2_skipped")
    assert all(e["summary"]["forward_tokens_extra"] > 0 for e in steps_of(events))
    assert "hive/entropy_correlation" in steps_of(events)[-1]["summary"]["metrics"]


def test_hora_group_sizes_sum_to_b_times_n(run_tiny):
    _, _, events = run_tiny(selectors={"hora": {"n0": 2}})
    assert_complete(events, 3)
    for step in steps_of(events):
        group_sizes = [o["group_size"] for o in step["observations"]]
        assert sum(group_sizes) == B * N
        allocated = [d for d in step["decisions"] if d["action"] == "allocated"]
        assert len(allocated) == B
        successes = [int(d["scores"]["successes"]) for d in allocated]
        expected = hora.allocate(successes, 2, (N - 2) * B)
        assert [int(d["scores"]["extra"]) for d in allocated] == expected.tolist()
        assert sorted(group_sizes) == sorted((2 + expected).tolist())


def test_rlzvp_gives_zero_variance_groups_non_zero_advantages(run_tiny):
    _, _, zvp = run_tiny(selectors={"rlzvp": {}})
    shaped = decisions(zvp, method="rlzvp", action="shaped")
    assert shaped and all(d["scores"]["mean_advantage"] != 0 for d in shaped)
    for step in steps_of(zvp):
        s = step["summary"]
        mixed = sum(o["group_size"] for o in step["observations"] if 0 < o["pass_rate"] < 1)
        assert s["rollouts_effective"] > mixed  # zero-variance groups carried gradient too


def test_lze_updates_on_kappa_b_groups_after_the_first_epoch(run_tiny):
    _, _, events = run_tiny(selectors={"lze": {}}, steps=6)
    assert_complete(events, 6)
    late = [e for e in steps_of(events) if e["epoch"] >= 1]
    assert late
    for step in late:
        live = sum(0 < o["pass_rate"] < 1 for o in step["observations"])
        assert step["summary"]["groups_trained"] == min(int(0.4 * B), live)
        assert len([d for d in step["decisions"] if d["action"] == "selected"]) == step["summary"]["groups_trained"]


def test_lze_pruner_prunes_solved_prompts_and_skips_them(run_tiny):
    # An easy task (1-digit sums dominate after warm-up) so some prompts stay solved.
    _, _, events = run_tiny(selectors={"lze": {"prune": True, "t_prune": 1}}, steps=9, task_train_size=16,
                            batch_size=8)
    pruned = decisions(events, reason="lze.pruned")
    if not pruned:
        pytest.fail("no prompt was solved for a whole epoch: the warm-up is too weak for this test")
    assert decisions(events, reason="lze.skipped_pruned") or decisions(events, reason="lze.replayed")


def test_hive_hora_rlzvp_compose(run_tiny):
    _, _, events = run_tiny(selectors={"hive": {}, "hora": {"n0": 2}, "rlzvp": {}})
    assert_complete(events, 3)
    layers = {d["layer"] for d in decisions(events)}
    assert {"pre_rollout", "allocation"} <= layers
    for step in steps_of(events):
        assert sum(o["group_size"] for o in step["observations"]) == B * N


def test_k_steps_resume_k_steps_equals_2k_steps(run_tiny, tmp_path):
    common = {"selectors": {"hive": {}, "hora": {"n0": 2}, "rlzvp": {}}, "eval_every": 2, "checkpoint_every": 2}
    straight, _, events_a = run_tiny(out=tmp_path / "a", steps=4, **common)
    run_tiny(out=tmp_path / "b", steps=2, **common)
    resumed, status, events_b = run_tiny(out=tmp_path / "b", steps=4, resume=True, **common)
    assert status == RunStatus.SUCCEEDED

    def comparable(events):
        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if "seconds" not in k}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value
        return [strip(e) for e in events if e["event"] in ("step", "evaluation")]

    assert comparable(events_b) == comparable(events_a)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_diverged_run_fails_with_a_reason_and_keeps_the_last_good_checkpoint(run_tiny, tmp_path):
    out = tmp_path / "diverge"
    run_tiny(out=out, steps=2, checkpoint_every=1)
    # Resumed with an absurd learning rate (past lr's range, which the config refuses): the first
    # update breaks the weights.
    _, status, events = run_tiny(out=out, steps=4, checkpoint_every=1, resume=True, beyond_ranges={"lr": 1e37})
    assert status == RunStatus.FAILED
    finished = events[-1]
    assert finished["status"] == "failed"
    assert "training diverged after 3 completed steps" in finished["reason"]
    assert "last good checkpoint kept: step_000002" in finished["reason"]
    assert not (out / "checkpoints" / "step_000003").exists()
    state = torch.load(out / "checkpoints" / "step_000002" / "state.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_cancel_from_the_sink_stops_at_the_step_boundary_with_a_checkpoint(tmp_path, var_dir):
    from tests.engines.local.conftest import TINY
    from workers.engines.config import RunConfig
    from workers.engines.local.engine import LocalEngine
    from workers.engines.telemetry import JsonlSink, read_events

    sink = JsonlSink(tmp_path, control=Control.CANCEL)
    engine = LocalEngine(RunConfig.from_mapping(TINY), tmp_path, sink, var_dir=var_dir)
    assert engine.run() == RunStatus.CANCELLED
    events = read_events(sink.path)
    assert len(steps_of(events)) == 1
    assert events[-1]["status"] == "cancelled"
    assert events[-1]["reason"] == "cancelled on request after step 1"
    assert (tmp_path / "checkpoints" / "step_000001" / "state.pt").is_file()


def test_an_engine_error_fails_the_run_naming_the_step_and_is_raised(tmp_path, var_dir):
    from tests.engines.local.conftest import TINY
    from workers.engines.config import RunConfig
    from workers.engines.local.engine import LocalEngine
    from workers.engines.telemetry import JsonlSink, read_events

    class BrokenSink(JsonlSink):
        def step(self, record):
            if record.step == 1:
                raise ConnectionError("the control plane went away")
            return super().step(record)

    sink = BrokenSink(tmp_path)
    engine = LocalEngine(RunConfig.from_mapping(TINY), tmp_path, sink, var_dir=var_dir)
    with pytest.raises(ConnectionError):
        engine.run()
    finished = read_events(sink.path)[-1]
    assert finished["event"] == "run_finished" and finished["status"] == "failed"
    assert finished["reason"] == "engine error at step 1: ConnectionError: the control plane went away"


def test_the_device_hour_cap_stops_the_run_as_budget_stopped(run_tiny):
    _, status, events = run_tiny(max_device_hours=1e-9, steps=3)
    assert status == RunStatus.BUDGET_STOPPED
    assert len(steps_of(events)) == 1 and events[-1]["status"] == "budget_stopped"
    assert events[-1]["reason"].startswith("compute budget reached after step 1 (")


def test_the_loader_never_hands_out_a_key_twice_in_one_step_and_carries_repeats_over():
    from collections import deque

    from workers.engines.local.engine import Loader

    loader = Loader(["a", "b", "c"], np.random.default_rng(0))
    loader.begin_step()
    first = loader.take(2) + loader.take(5)  # asks for more than the dataset holds
    assert sorted(first) == ["a", "b", "c"]
    loader.put_back([first[0]])
    assert loader.take(1) == [first[0]]  # given back: may come again in the same step
    loader.begin_step()
    second = loader.take(3)
    assert len(set(second)) == 3
    state = loader.state_dict()
    copy = Loader(["a", "b", "c"], np.random.default_rng(99))
    copy.load_state_dict(state)
    assert copy.take(4) == Loader(["a", "b", "c"], np.random.default_rng(0), order=list(state["order"]),
                                  position=state["position"], queue=deque(state["queue"])).take(4)


def test_a_step_is_timed_in_its_four_phases_and_the_run_charged_their_sum(run_tiny):
    engine, _, events = run_tiny(selectors={"hora": {"n0": 2}}, steps=2)  # two rounds of rollouts a step
    total = 0.0
    for step in steps_of(events):
        seconds = step["summary"]["seconds"]
        assert list(seconds) == ["select", "generate", "reward", "update"]
        assert all(v > 0 for v in seconds.values())
        total += sum(seconds.values())
        assert step["summary"]["train"]["device_seconds_total"] == pytest.approx(total)
    assert engine.device_seconds == pytest.approx(total)


def test_the_step_timer_adds_each_phase_s_seconds_to_it_alone():
    from workers.engines.local.engine import StepTimer

    timer = StepTimer()
    for _ in range(2):
        with timer.phase("reward"):
            pass
    assert timer.seconds["reward"] > 0
    assert timer.seconds["select"] == timer.seconds["generate"] == timer.seconds["update"] == 0.0
    assert timer.total == timer.seconds["reward"]
