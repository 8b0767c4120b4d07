"""HIVE stage 2 in verl: the current actor's prompt entropy, one forward pass over the candidates.

HIVE gates stage-1 survivors on the mean next-token entropy over prompt positions 2..L under
the current policy (docs/algorithms.md §3, HIVE stage 2; the local engine's ``prompt_entropy``). verl's
actor computes exactly that kind of quantity for responses: ``actor_rollout_wg.compute_log_prob``
with ``calculate_entropy=True`` writes per-token entropies of a TransferQueue batch, and
``response_from_nested`` takes the positions predicting the response tokens. So the probe
stores each candidate as a one-token "prompt" (its first token) and a "response" (tokens
2..L): the entropies verl returns for the response are the ones HIVE wants, from the actor's
own weights, sharding and micro-batching.

The probe lives in its own TransferQueue partition (``edgeplane_probe``) with the fields the
agent loop writes for a trajectory, is padded to the actor's data-parallel size x its log-prob
micro-batch by verl's own ``upsample_batch_to_divisible_size``, and is cleared afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.utils.padding import response_from_nested

PARTITION = "edgeplane_probe"


def prompt_token_ids(tokenizer: Any, raw_prompts: Sequence[Any]) -> list[list[int]]:
    """Token ids of each chat prompt as the agent loop renders it (generation prompt added)."""
    out = []
    for raw in raw_prompts:
        ids = tokenizer.apply_chat_template(list(raw), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append([int(t) for t in ids])
    return out


def put_probe(token_ids: Sequence[Sequence[int]], partition_id: str = PARTITION) -> KVBatchMeta:
    """Store the candidates as (first token | tokens 2..L) trajectories; returns their batch."""
    keys, fields, tags = [], [], []
    for ids in token_ids:
        if len(ids) < 2:
            ids = [*ids, *ids] if ids else [0, 0]  # one token predicts nothing: entropy of a repeat
        uid = uuid.uuid4().hex
        input_ids = torch.tensor(ids, dtype=torch.int64)
        prompts, responses = input_ids[:1], input_ids[1:]
        mask = torch.ones_like(responses)
        keys.append(f"{uid}_0_0")
        fields.append({"uid": uid, "prompts": prompts, "responses": responses, "input_ids": input_ids,
                       "attention_mask": torch.ones_like(input_ids), "position_ids": torch.arange(len(ids)),
                       "response_mask": mask, "loss_mask": mask, "rm_scores": torch.zeros(len(responses))})
        tags.append({"status": "success", "prompt_len": 1, "response_len": len(ids) - 1, "seq_len": len(ids),
                     "global_steps": 0, "min_global_steps": 0, "max_global_steps": 0})
    tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=list_of_dict_to_tensordict(fields), tags=tags)
    return KVBatchMeta(partition_id=partition_id, keys=keys, tags=tags)


def pad_to_multiple(batch: KVBatchMeta, multiple: int, eos_token_id: int = 0) -> KVBatchMeta:
    """The probe padded with verl's no-op samples to a multiple of ``multiple`` rows (the
    actor's data-parallel size x its log-prob micro-batch: what ``compute_log_prob`` needs)."""
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

    return upsample_batch_to_divisible_size(batch, max(1, int(multiple)), eos_token_id)


def read_prompt_entropy(keys: Sequence[str], partition_id: str = PARTITION) -> np.ndarray:
    """Mean entropy over each probe's response positions (prompt positions 2..L)."""
    data = tq.kv_batch_get(keys=list(keys), partition_id=partition_id, select_fields=["entropy", "response_mask"])
    per_token = response_from_nested(data["entropy"], data["response_mask"])
    return np.array([float(row.float().mean()) for row in per_token.unbind()], dtype=np.float64)


def actor_prompt_entropy(token_ids: Sequence[Sequence[int]], *, compute_log_prob: Callable[[KVBatchMeta], Any],
                         pad_to_multiple: Callable[[KVBatchMeta], KVBatchMeta], temperature: float) -> np.ndarray:
    """One forward pass of the actor over the probe; the probe is cleared whatever happens."""
    if not token_ids:
        return np.zeros(0)
    probe = put_probe(token_ids)
    own_keys = list(probe.keys)
    batch = probe
    try:
        batch = pad_to_multiple(probe)
        batch.extra_info.update({"calculate_entropy": True, "compute_loss": False, "temperature": temperature})
        compute_log_prob(batch)
        return read_prompt_entropy(own_keys, probe.partition_id)
    finally:
        tq.kv_clear(keys=list(batch.keys), partition_id=probe.partition_id)
