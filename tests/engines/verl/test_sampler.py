"""Post-rollout selection (LZE backward) in verl's replay buffer, over a local TransferQueue.

``EdgeplaneReplayBuffer`` is built with the arguments verl's ``_build_replay_buffer`` passes
its built-in buffer without a group filter, and the test calls verl's own
``ReplayBuffer.sample`` (its polling, metadata sync from TransferQueue and materialisation),
with prompt groups stored the way the trainer (prompt tags) and the agent loop
(trajectories) store them.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

N = 4
PASSES = [0, 1, 2, 3, 4, 1, 2, 3, 1, 3]  # successes per group of N: groups 0 and 4 zero-variance


def _buffer():
    from omegaconf import OmegaConf

    from workers.engines.verl.sampler import EdgeplaneReplayBuffer

    return EdgeplaneReplayBuffer(
        trainer_mode="sync", trainer_config=OmegaConf.create({}), max_off_policy_threshold=None,
        max_off_policy_strategy="drop", sampler_kwargs=OmegaConf.create({}), refill_fn=lambda n: n,
        filter_groups_metric=None, train_batch_size=len(PASSES), gen_batch_size=len(PASSES),
    )


def _store(tq, partition: str) -> tuple[list[str], list[str]]:
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    uids, stable, keys, fields, tags = [], [], [], [], []
    for g, passes in enumerate(PASSES):
        uid, key = str(uuid.uuid4()), f"prompt-{g}"
        uids.append(uid)
        stable.append(key)
        for s in range(N):
            rm = torch.zeros(3)
            rm[-1] = float(s < passes)
            keys.append(f"{uid}_{s}_0")
            fields.append({"uid": uid, "rm_scores": rm, "response_mask": torch.ones(3, dtype=torch.int64),
                           "extra_info": {"key": key, "index": g}})
            tags.append({"status": "success", "global_steps": g})
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    # The prompt entries, finished (distinct global_steps: verl orders groups oldest first).
    tq.kv_batch_put(keys=uids, partition_id=partition,
                    tags=[{"is_prompt": True, "status": "finished", "global_steps": g} for g in range(len(uids))])
    return uids, stable


def test_lze_backward_selection_keeps_the_pipelines_top_k_and_clears_the_rest(local_tq):
    from workers.selection.pipeline import Pipeline

    tq = local_tq
    uids, stable = _store(tq, "lze_train")
    buffer = _buffer()
    pipeline = Pipeline({"lze": {}}, batch_size=len(PASSES), group_size=N, seed=7)
    step_selection = pipeline.begin_step(3, 1)  # LZE trains on every live group in epoch 0; top-K from epoch 1
    buffer.open_step(step_selection)

    batch, _ = buffer.sample(global_steps=3, partition_id="lze_train", batch_size=len(PASSES))

    # The same choice from our library, same seed, same order (oldest first).
    reference = Pipeline({"lze": {}}, batch_size=len(PASSES), group_size=N, seed=7)
    step = reference.begin_step(3, 1)
    pass_rate = np.array(PASSES) / N
    expected = reference.selectors["lze"].select_for_update(step, pass_rate, stable)
    assert expected.sum() == 4  # K = max(0.4 B, 0.3 B) of 8 live groups

    kept = {u for u, ok in zip(uids, expected) if ok}
    assert {k.split("_")[0] for k in batch.keys} == kept
    assert len(batch.keys) == 4 * N
    # Every group is an outcome of the step (the ledger sees them all); four are trained.
    assert sorted(o.key for o in step_selection.outcomes) == sorted(stable)
    assert [o.successes for o in step_selection.outcomes] == PASSES
    assert sorted(g.key for g in step_selection.trained_groups) == sorted(
        k for k, ok in zip(stable, expected) if ok)
    reasons = {d.prompt_key: d.reason for d in step_selection.decisions}
    assert reasons["prompt-0"] == reasons["prompt-4"] == "lze.zero_variance"
    assert sum(r == "lze.selected" for r in reasons.values()) == 4
    # Groups not kept are gone from TransferQueue (prompt entries and trajectories).
    left = tq.kv_list("lze_train").get("lze_train", {})
    assert not {k.split("_")[0] for k in left} & (set(uids) - kept)


def test_val_partition_and_no_open_step_keep_verls_selection(local_tq):
    tq = local_tq
    uids, _ = _store(tq, "val")
    buffer = _buffer()
    from workers.selection.pipeline import Pipeline

    buffer.open_step(Pipeline({"lze": {}}, batch_size=len(PASSES), group_size=N).begin_step(1, 1))
    batch, _ = buffer.sample(global_steps=1, partition_id="val", batch_size=len(PASSES))
    assert {k.split("_")[0] for k in batch.keys} == set(uids)
    tq.kv_clear(keys=[*uids, *batch.keys], partition_id="val")

    uids, _ = _store(tq, "plain_train")
    batch, _ = _buffer().sample(global_steps=1, partition_id="plain_train", batch_size=len(PASSES))
    assert {k.split("_")[0] for k in batch.keys} == set(uids)
