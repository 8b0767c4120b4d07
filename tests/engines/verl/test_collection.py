"""How a step's collection ends inside verl's replay buffer: the generation cap, a dataset that
runs out, and rollouts that never finish (the contract harness: verl's real dataloader,
replay buffer and TransferQueue, a scripted rollout in place of the agent loop).

verl 0.9.1's V1 ignores ``filter_groups.max_num_gen_batches`` and refills evicted groups until
it has B; docs/algorithms.md §1 asks for an alert and training on what was collected. Every wait for
rollouts has a deadline, so a stuck rollout fails the run with a reason instead of hanging it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from tests.engines.verl.harness import B, N, ScriptedRollout, char_tokenizer, run_step, trainer_for
from workers.engines.verl.sampler import RolloutTimeout


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return char_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def never_solved(key: str) -> int:
    return 0


class StuckRollout(ScriptedRollout):
    """Writes no trajectory and never marks a prompt finished: a rollout worker that hangs."""

    def generate_sequences(self, batch) -> None:
        self.submitted.append([str(k) for k in batch["extra_info"]])


@pytest.mark.parametrize("max_gen_batches", [1, 2, 3])
def test_dapo_stops_refilling_at_its_generation_cap_and_trains_on_what_it_collected(
        tmp_path, tokenizer, tq, max_gen_batches):
    rollout = ScriptedRollout(N, never_solved)
    trainer = trainer_for(tmp_path, tokenizer, {"dapo": {"max_gen_batches": max_gen_batches}}, rollout=rollout)
    result, trained, _ = run_step(trainer, tq)
    rolled_out = [k for call in rollout.submitted for k in call]
    assert len(rolled_out) == max_gen_batches * B  # the cap, in prompts; no more refills
    assert len(set(rolled_out)) == len(rolled_out)
    assert result.accounting.groups_generated == max_gen_batches * B  # every group recorded
    assert any("generation cap" in a for a in result.alerts), result.alerts
    assert trained  # trained on verl's batch (zero advantages) rather than stall or crash
    assert not (tq.kv_list() or {}).get("train")  # nothing left behind for a later step


def test_a_dataset_that_runs_out_inside_a_step_ends_collection_without_a_crash(tmp_path, tokenizer, tq):
    rollout = ScriptedRollout(N, never_solved)
    # 6 prompts, B = 4, all zero-variance: the refills use up the dataset within the first step.
    trainer = trainer_for(tmp_path, tokenizer, {"greso": {}}, rollout=rollout, task_train_size=6)
    results = [run_step(trainer, tq)[0] for _ in range(2)]
    first = results[0]
    assert sum(len(call) for call in rollout.submitted[:len(rollout.submitted)]) >= 6
    assert any("no more distinct prompts" in a for a in first.alerts), first.alerts
    assert first.accounting.groups_generated == 6
    assert results[1].step == 1  # the next step runs as usual


def test_a_stuck_rollout_fails_the_step_with_the_reason_instead_of_hanging(tmp_path, tokenizer, tq):
    trainer = trainer_for(tmp_path, tokenizer, {"grpo": {}}, rollout=StuckRollout(N, never_solved))
    trainer.replay_buffer.timeout_s = 0.5
    with pytest.raises(RolloutTimeout, match=r"did not finish within 0 s"):
        run_step(trainer, tq)


def test_hora_does_not_wait_for_ever_on_its_probe(tmp_path, tokenizer, tq):
    trainer = trainer_for(tmp_path, tokenizer, {"hora": {"n0": 2}}, rollout=StuckRollout(N, never_solved))
    trainer.rollout_timeout_s = 0.5
    with pytest.raises(RolloutTimeout, match=r"HORA's probe rollouts did not finish within 0 s"):
        run_step(trainer, tq)
