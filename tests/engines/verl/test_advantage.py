"""RL-ZVP in verl's V1 advantage step, on a real batch in a local TransferQueue.

The trainer cannot be constructed without GPUs (worker groups, vLLM): the test takes a real
``EdgeplaneTrainer`` instance without running ``__init__`` (``object.__new__``) and gives it
the attributes ``_compute_advantage`` reads (``config``: verl's ppo_trainer.yaml composed
with our overrides; ``pipeline``; the step's counter of rollouts with a nonzero advantage).
The override then runs verl's own ``_compute_advantage`` through ``super()`` over TransferQueue,
and our rewrite after it. The batch is stored the way
``AgentLoopWorkerTQ._agent_loop_postprocess`` stores it (``list_of_dict_to_tensordict``, keys
``{uid}_{session}_{index}``) plus the ``entropy``/``old_log_probs`` fields
``_compute_old_log_prob`` adds, and padded by verl's own ``upsample_batch_to_divisible_size``.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from workers.selection.rlzvp import token_advantages

N = 4
ALPHA = 0.1
EOS = 2


def _config(methods: str):
    from workers.engines.verl.launch import compose_overrides

    return compose_overrides([
        f"actor_rollout_ref.rollout.n={N}", "data.train_batch_size=4",
        "algorithm.adv_estimator=grpo", f"+edgeplane.methods='{methods}'",
    ])


def _trainer(config):
    from types import SimpleNamespace

    from workers.engines.verl.edgeplane_config import build_pipeline
    from workers.engines.verl.selecting import StepWork
    from workers.engines.verl.trainer import EdgeplaneTrainer

    trainer = object.__new__(EdgeplaneTrainer)
    trainer.config = config
    trainer.pipeline = build_pipeline(config)
    trainer.work = StepWork(1, trainer.pipeline.begin_step(0, 0))
    trainer.replay_buffer = SimpleNamespace(outcomes={})  # uid -> outcome: none known, so keys are uids
    return trainer


def _trajectories(rng: np.random.Generator):
    """Groups: mixed, all-correct, all-wrong (N sessions each) and a single-session group."""
    groups = {"mixed": [1, 0, 1, 0], "correct": [1, 1, 1, 1], "wrong": [0, 0, 0, 0], "single": [1]}
    keys, fields, tags = [], [], []
    for rewards in groups.values():
        uid = str(uuid.uuid4())
        for session, reward in enumerate(rewards):
            resp_len = int(rng.integers(3, 7))
            prompts = torch.arange(5, 10, dtype=torch.int64)
            responses = torch.arange(20, 20 + resp_len, dtype=torch.int64)
            input_ids = torch.cat([prompts, responses])
            rm = torch.zeros(resp_len, dtype=torch.float32)
            rm[-1] = float(reward)
            keys.append(f"{uid}_{session}_0")
            fields.append({
                "uid": uid, "session_id": session,
                "prompts": prompts, "responses": responses, "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids), "position_ids": torch.arange(input_ids.numel()),
                "response_mask": torch.ones(resp_len, dtype=torch.int64),
                "loss_mask": torch.ones(resp_len, dtype=torch.int64),
                "rm_scores": rm,
                "old_log_probs": -torch.rand(resp_len),
                "entropy": torch.rand(resp_len) * 2,
            })
            tags.append({"status": "success", "prompt_len": 5, "response_len": resp_len,
                         "seq_len": 5 + resp_len, "global_steps": 1})
    return groups, keys, fields, tags


def _put_batch(tq, partition: str, rng):
    from tensordict import TensorDict  # noqa: F401
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    groups, keys, fields, tags = _trajectories(rng)
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    batch = KVBatchMeta(partition_id=partition, keys=keys, tags=tags)
    return groups, upsample_batch_to_divisible_size(batch, 16, EOS)  # 13 rows -> 3 padding rows


def _copy(tq, batch, partition: str):
    from transfer_queue import KVBatchMeta

    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
    tq.kv_batch_put(keys=batch.keys, partition_id=partition, fields=data, tags=batch.tags)
    return KVBatchMeta(partition_id=partition, keys=list(batch.keys), tags=list(batch.tags))


def _read(tq, batch, field):
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[field])
    return data[field].to_padded_tensor(0.0)


def test_rlzvp_override_on_a_real_batch_with_padding_groups(local_tq):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    tq = local_tq
    rng = np.random.default_rng(0)
    config = _config(f'{{"rlzvp": {{"alpha": {ALPHA}}}}}')
    trainer = _trainer(config)
    groups, batch = _put_batch(tq, "adv_ours", rng)
    reference = _copy(tq, batch, "adv_verl")
    assert len(batch) == 16
    pad = np.array([k.startswith("pad") for k in batch.keys])
    assert pad.sum() == 3 and all(t.get("is_padding") for t, p in zip(batch.tags, pad) if p)

    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    PPOTrainerSync._compute_advantage(trainer, reference, {})  # verl's own GRPO, same rows

    ours = _read(tq, batch, "advantages").double().numpy()
    verl_adv = _read(tq, reference, "advantages").double().numpy()
    returns = _read(tq, batch, "returns").double().numpy()
    mask = _read(tq, batch, "response_mask").numpy().astype(bool)
    entropy = _read(tq, batch, "entropy").double().numpy()
    rewards = _read(tq, batch, "rm_scores").double().numpy().sum(-1)
    uids = [k.rsplit("_", 2)[0] for k in batch.keys]

    # Non-padding rows: exactly our library's RL-ZVP token advantages.
    real = ~pad
    expected = token_advantages(rewards[real], [u for u, r in zip(uids, real) if r], entropy[real],
                                mask[real], alpha=ALPHA)
    np.testing.assert_allclose(ours[real], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, ours, rtol=1e-6)
    # Padding rows: untouched (as verl wrote them).
    np.testing.assert_array_equal(ours[pad], verl_adv[pad])
    # Mixed and single-session groups: verl's GRPO, bit for bit; zero-variance groups shaped.
    group_of = {uid: name for uid, name in zip(dict.fromkeys(u for u in uids if not u.startswith("pad")), groups)}
    names = np.array([group_of.get(u, "pad") for u in uids])
    for name in ("mixed", "single"):
        np.testing.assert_array_equal(ours[names == name], verl_adv[names == name])
    assert np.abs(verl_adv[np.isin(names, ["correct", "wrong"])]).max() == 0
    correct, wrong = names == "correct", names == "wrong"
    np.testing.assert_allclose(ours[correct][mask[correct]], ALPHA * entropy[correct][mask[correct]], rtol=1e-5)
    assert (ours[wrong][mask[wrong]] <= 0).all() and (ours[wrong][mask[wrong]] < 0).any()
    assert metrics["rlzvp/shaped_groups"] == 2
    assert metrics["rlzvp/shaped_rollouts"] == 8
    assert metrics["rlzvp/padding_rows_skipped"] == 3
    # The step's accounting: rollouts that carry signal, no padding: 4 mixed, 8 shaped, and the
    # single-session group's one row (verl's GRPO scores a group of one by its raw reward, 1).
    assert trainer.work.rollouts_effective == int((np.abs(ours[real]) > 0).any(axis=1).sum()) == 13
    # RL-ZVP's decisions and metric, as the embedded engine records them (one per shaped group).
    step = trainer.work.selection
    reasons = {d.prompt_key: d.reason for d in step.decisions}
    correct_uid = next(u for u, n in group_of.items() if n == "correct")
    wrong_uid = next(u for u, n in group_of.items() if n == "wrong")
    assert reasons == {correct_uid: "rlzvp.all_correct", wrong_uid: "rlzvp.all_wrong"}
    assert all(d.layer == "advantage" and d.method == "rlzvp" and d.scores["group_size"] == 4
               for d in step.decisions)
    assert step.metrics["rlzvp/shaped_rollouts"] == 8


def test_without_rlzvp_the_override_is_verls_grpo(local_tq):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    tq = local_tq
    trainer = _trainer(_config('{"grpo": {}}'))
    _, batch = _put_batch(tq, "grpo_ours", np.random.default_rng(1))
    reference = _copy(tq, batch, "grpo_verl")
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    PPOTrainerSync._compute_advantage(trainer, reference, {})
    np.testing.assert_array_equal(_read(tq, batch, "advantages").numpy(), _read(tq, reference, "advantages").numpy())
    assert not any(k.startswith("rlzvp/") for k in metrics)
    assert trainer.work.rollouts_effective == 5  # mixed (4) and single-session (1): zero-variance groups get 0


def test_padding_rows_by_prefix_or_empty_mask():
    from workers.engines.verl.advantage import padding_rows

    mask = np.array([[1, 1], [0, 0], [0, 0], [0, 0], [1, 0]])
    uids = ["a", "pad1", "pad1", "b", "b"]
    np.testing.assert_array_equal(padding_rows(uids, mask), [False, True, True, False, False])
    np.testing.assert_array_equal(padding_rows(["a", "c"], mask[:2]), [False, True])
