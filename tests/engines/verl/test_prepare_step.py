"""Selection inside verl's step on CPU: the real dataloader over our parquet, the real replay buffer.

``harness.make_trainer`` builds ``EdgeplaneTrainer`` from the launcher's composed config and
runs verl's ``_init_dataloader`` on the exported parquet. Each test step is verl's sync
cycle without the GPU parts: ``prepare_step`` (pre-rollout selection, submission through
``_submit_batch_to_rollout`` into TransferQueue), the scripted rollout writing trajectories,
``replay_buffer.sample`` (verl's polling, its group filter and refills through our
``_add_prompts_to_generate``, our post-rollout selection), then ``close_step``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from tests.engines.verl.harness import (
    B,
    EntropyActor,
    N,
    char_tokenizer,
    run_step,
    successes,
    trainer_for,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return char_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_greso_skips_by_history_and_verl_rolls_out_exactly_b_screened_prompts(tmp_path, tokenizer, tq):
    trainer = trainer_for(tmp_path, tokenizer, {"greso": {}})
    assert trainer.replay_buffer.filter_groups_metric == "reward"  # GRESO's post-filter is verl's
    skipped_total = 0
    for _ in range(10):
        calls_before = len(trainer.agent_loop_manager.submitted)
        result, trained, _ = run_step(trainer, tq)
        calls = trainer.agent_loop_manager.submitted[calls_before:]
        submitted = [k for call in calls for k in call]
        assert len(calls[0]) == B  # the step's batch; later calls are verl's refills
        assert len(submitted) == len(set(submitted))  # no prompt twice in one step
        skipped = {d.prompt_key for d in result.decisions if d.reason.endswith("_skipped")}
        assert not skipped & set(submitted)
        skipped_total += len(skipped)
        # Every group generated is in the record; the trained ones are B mixed groups.
        assert sorted(o["prompt_key"] for o in result.observations) == sorted(submitted)
        assert len(trained) == B and all(0 < successes(k) < N for k in trained)
        assert {o["prompt_key"] for o in result.observations if o["trained"]} == trained
        for d in result.decisions:
            if d.reason == "dapo.all_correct":
                assert successes(d.prompt_key) == N and d.method == "greso"
            if d.reason == "dapo.all_wrong":
                assert successes(d.prompt_key) == 0
        assert result.accounting.rollouts_generated == N * len(submitted)
    assert skipped_total > 0  # history made GRESO skip zero-variance prompts
    ledger = trainer.pipeline.ledger
    assert int((ledger.column("visits") > 0).sum()) >= 20  # every group generated was recorded


def test_hive_stage_two_gates_on_the_actors_prompt_entropy(tmp_path, tokenizer, tq):
    from workers.engines.verl.entropy import prompt_token_ids

    trainer = trainer_for(tmp_path, tokenizer, {"hive": {}})
    micro = int(trainer.config.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu)
    actor = EntropyActor(vocab_size=len(tokenizer), dp=2, micro_batch=micro)  # two data-parallel ranks
    trainer.actor_rollout_wg = actor
    trainer._select_ahead()  # what on_step_end does before waking vLLM
    assert actor.calls >= 1  # one pass per filled candidate pool (1.5 B), until B prompts pass the gate
    ahead = [str(k) for k in trainer.selected_ahead[1]["key"]]
    # The probe is padded to what compute_log_prob needs: data-parallel size (2) x the log-prob
    # micro-batch (verl's engine asserts it), not to a PPO mini-batch multiple.
    multiple = 2 * micro
    assert all(total % multiple == 0 and padding < multiple for total, padding in actor.batches)
    result, _, _ = run_step(trainer, tq)
    submissions = trainer.agent_loop_manager.submitted
    assert submissions[0] == ahead  # the step rolled out the batch selected ahead
    assert actor.calls >= len(submissions)  # each refill of verl's group filter was gated too

    stage2 = [d for d in result.decisions if d.reason.startswith("hive.stage2")]
    assert len(stage2) >= B
    raw = {}
    for row in trainer.train_dataset:
        raw[str(row["extra_info"]["key"])] = row["raw_prompt"]
    for d in stage2:
        ids = prompt_token_ids(tokenizer, [raw[d.prompt_key]])[0]
        expected = float(actor.entropy_of(torch.tensor(ids))[:-1].mean())  # positions predicting tokens 2..L
        assert d.scores["entropy"] == pytest.approx(expected, rel=1e-5)
        assert (d.reason == "hive.stage2_kept") == (d.scores["entropy"] >= d.scores["threshold"])
    kept = {d.prompt_key for d in stage2 if d.reason == "hive.stage2_kept"}
    # every prompt rolled out passed the gate, or was a uniform audit draw that no filter sees
    audited = {d.prompt_key for d in result.decisions if d.reason == "audit.uniform"}
    assert {k for call in submissions for k in call} <= kept | audited
    assert not (tq.kv_list() or {}).get("edgeplane_probe")  # the probe is cleared
    assert result.accounting.forward_tokens_extra > 0


def test_lze_prunes_solved_prompts_at_the_epoch_end_and_replays_some(tmp_path, tokenizer, tq):
    trainer = trainer_for(tmp_path, tokenizer, {"lze": {"prune": True, "t_prune": 1, "replay_ratio": 0.5}})
    results = []
    for _ in range(6 + 5):  # 24 prompts, B = 4: the dataloader wraps in the 7th step, epoch 1 opens at the 8th
        result, trained, _ = run_step(trainer, tq)
        results.append((result, trained, list(trainer.agent_loop_manager.submitted[-1])))
    assert trainer.epoch == 1
    decisions = [d for r, _, _ in results for d in r.decisions]
    pruned = {d.prompt_key for d in decisions if d.reason == "lze.pruned"}
    replayed = [d.prompt_key for d in decisions if d.reason == "lze.replayed"]
    assert pruned and all(successes(k) == N for k in pruned)  # solved in every visit of epoch 0
    assert 0 < len(replayed) < len(pruned)
    second = [(r, trained, submitted) for r, trained, submitted in results if r.epoch == 1]
    assert len(second) == 4
    rolled_out = [k for _, _, submitted in second for k in submitted]
    assert not (pruned - set(replayed)) & set(rolled_out)  # pruned and not replayed: never rolled out
    assert set(replayed) <= set(rolled_out[: len(replayed)])  # replays go first
    skipped = {d.prompt_key for r, _, _ in second for d in r.decisions if d.reason == "lze.skipped_pruned"}
    assert skipped and skipped <= pruned  # replays still solved are pruned again, and skipped
    # Backward selection: from the second epoch on, LZE trains on its top-K of the live groups.
    # A step of replays only (all still solved) has no live group: verl's batch goes through
    # with zero advantages, and the step says so.
    for result, trained, _ in second:
        selected = {d.prompt_key for d in result.decisions if d.reason == "lze.selected"}
        if selected:
            assert trained == selected and all(0 < successes(k) < N for k in trained)
        else:
            assert all(successes(k) in (0, N) for k in trained)
            assert any("no group selected" in a for a in result.alerts)
    assert sum(1 for r, _, _ in second if any(d.reason == "lze.selected" for d in r.decisions)) >= 3


def test_hora_probes_allocates_the_rest_and_verl_trains_one_weighted_group_per_prompt(tmp_path, tokenizer, tq):
    from workers.selection import hora
    from workers.selection.rlzvp import token_advantages

    n0 = 2
    trainer = trainer_for(tmp_path, tokenizer, {"hora": {"n0": n0}, "rlzvp": {"alpha": 0.1}})
    trainer.rollouts_effective = 0
    rollout = trainer.agent_loop_manager
    trainer.global_steps = 1
    trainer.prepare_step()

    # Phase A: the step's B prompts with n0 rollouts each; phase B: the allocation of the
    # rest of B x N, exactly as our library computes it from the probe's successes.
    (probe_keys, extra_keys), (probe_sizes, extra_sizes) = rollout.submitted, rollout.sizes
    assert len(probe_keys) == B and probe_sizes == [n0] * B
    probe_wins = np.array([rollout.wins(k, n0) for k in probe_keys])
    allocation = hora.allocate(probe_wins, n0, (N - n0) * B, (1.0, 1.0))
    assert dict(zip(extra_keys, extra_sizes)) == {k: int(m) for k, m in zip(probe_keys, allocation) if m}
    assert sum(probe_sizes) + sum(extra_sizes) == B * N  # compute-matched

    batch, metrics = trainer.replay_buffer.sample(global_steps=1, partition_id="train", batch_size=B)
    # verl's batch holds every rollout, and the extras carry their probe group's uid.
    data = tq.kv_batch_get(keys=batch.keys, partition_id="train",
                           select_fields=["uid", "rm_scores", "entropy", "response_mask", "extra_info"])
    uids = [str(u) for u in data["uid"]]
    assert len(set(uids)) == B and len(uids) == B * N
    size_of = {str(getattr(i, "data", i)["key"]): uids.count(u) for u, i in zip(uids, data["extra_info"])}
    assert size_of == {k: n0 + int(m) for k, m in zip(probe_keys, allocation)}

    trainer._compute_advantage(batch, metrics)  # verl's GRPO, RL-ZVP, then the N / G_i weight
    ours = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages"])[
        "advantages"].to_padded_tensor(0.0).double().numpy()
    rewards = data["rm_scores"].to_padded_tensor(0.0).double().numpy().sum(-1)
    mask = data["response_mask"].to_padded_tensor(0).numpy().astype(bool)
    entropy = data["entropy"].to_padded_tensor(0.0).double().numpy()
    expected = token_advantages(rewards, uids, entropy, mask, alpha=0.1)
    weight = np.array([N / uids.count(u) for u in uids])
    np.testing.assert_allclose(ours, expected * weight[:, None], rtol=1e-5, atol=1e-6)

    trainer.close_step(metrics, {})
    result = trainer.last_result
    assert {o["prompt_key"]: o["group_size"] for o in result.observations} == size_of
    allocated = {d.prompt_key: d.scores["extra"] for d in result.decisions if d.reason == "hora.allocated"}
    assert allocated == {k: int(m) for k, m in zip(probe_keys, allocation)}
    assert result.accounting.rollouts_generated == B * N == result.accounting.rollouts_uniform


def test_selection_state_and_given_back_candidates_survive_a_checkpoint(tmp_path, tokenizer, tq):
    from workers.engines.verl.checkpoint import SelectionCheckpointCallback

    trainer = trainer_for(tmp_path, tokenizer, {"greso": {}})
    for _ in range(3):
        run_step(trainer, tq)
    trainer.prompt_pool.put_back(trainer.prompt_pool.take(2))  # candidates given back, not yet rolled out
    pending = trainer.prompt_pool.pending_keys()
    folder = tmp_path / "checkpoints" / f"global_step_{trainer.global_steps}"
    SelectionCheckpointCallback().on_save(trainer, trainer.global_steps, str(folder))

    resumed = trainer_for(tmp_path / "again", tokenizer, {"greso": {}})
    resumed.config.trainer.default_local_dir = str(tmp_path / "checkpoints")
    resumed.global_steps = trainer.global_steps  # what verl's _load_checkpoint sets
    resumed.restore_selection()
    assert resumed.prompt_pool.pending_keys()[: len(pending)] == pending
    assert resumed.epoch == trainer.epoch
    assert resumed.pipeline.ledger.keys == trainer.pipeline.ledger.keys
    np.testing.assert_array_equal(resumed.pipeline.ledger.column("visits"), trainer.pipeline.ledger.column("visits"))
