"""Held-out evaluation: k samples per prompt, Pass@1 and Pass@k (unbiased), overall and
per difficulty, and the Pass@j curve for j = 1, 2, 4, ... up to k."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from workers.engines.local.model import Policy
from workers.engines.local.sampling import sample
from workers.problems.dataset import PromptRecord
from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.metrics import pass_at_k


def evaluate(
    policy: Policy,
    records: list[PromptRecord],
    verifier: Callable[[str, str], float],
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
    chunk: int = 512,
) -> dict[str, Any]:
    start = time.perf_counter()
    prompts = [policy.encode_prompt(r.prompt) for r in records]
    correct = np.zeros(len(records), dtype=np.int64)
    rows = [i for i in range(len(records)) for _ in range(k)]
    for begin in range(0, len(rows), chunk):
        part = rows[begin: begin + chunk]
        rollouts = sample(policy, [prompts[i] for i in part], max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p, generator=generator)
        for row, i in enumerate(part):
            ids = rollouts.response_ids[row][rollouts.response_mask[row]].tolist()
            correct[i] += verifier(policy.decode_response(ids), records[i].ground_truth) >= SUCCESS_THRESHOLD
    n = np.full(len(records), k)
    p1 = pass_at_k(n, correct, 1) if len(records) else np.zeros(0)
    pk = pass_at_k(n, correct, k) if len(records) else np.zeros(0)
    ks = sorted({*(2**i for i in range(k.bit_length()) if 2**i <= k), k})
    curve = {j: pass_at_k(n, correct, j) if len(records) else np.zeros(0) for j in ks}
    by_difficulty: dict[str, dict[str, Any]] = defaultdict(dict)
    tags = np.array([r.difficulty or "all" for r in records])
    for tag in sorted(set(tags.tolist())):
        pick = tags == tag
        by_difficulty[tag] = {"pass_at_1": float(np.mean(p1[pick])), "pass_at_k": float(np.mean(pk[pick])),
                              "prompts": int(pick.sum()),
                              "pass_at": {str(j): float(np.mean(v[pick])) for j, v in curve.items()}}
    return {
        "k": k,
        "prompts": len(records),
        "pass_at_1": float(np.mean(p1)) if len(records) else 0.0,
        "pass_at_k": float(np.mean(pk)) if len(records) else 0.0,
        "by_difficulty": dict(by_difficulty),
        "pass_at": {str(j): float(np.mean(v)) if len(records) else 0.0 for j, v in curve.items()},
        # as groups of k rollouts: the share GRPO would get no signal from
        "zero_variance_share": float(np.mean((correct == 0) | (correct == k))) if len(records) else 0.0,
        "all_correct_share": float(np.mean(correct == k)) if len(records) else 0.0,
        "seconds": time.perf_counter() - start,
    }
