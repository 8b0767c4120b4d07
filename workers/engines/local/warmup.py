"""Supervised warm-up of the tiny model so that RL starts on a real learning edge.

A randomly initialised GPT answers nothing right, every group is all-wrong and GRPO has
no signal. A short supervised phase on (prompt, answer) pairs of the train split brings
it to partial skill; the result is cached under var/ by a hash of everything it depends
on, so repeated runs (and the tests) pay for it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from workers.engines.dataset import PromptRecord
from workers.engines.local.model import Policy
from workers.engines.local.sampling import left_pad, positions

log = logging.getLogger(__name__)


def supervised_warmup(
    policy: Policy,
    records: list[PromptRecord],
    *,
    steps: int,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
    cache_path: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Train on answers with cross-entropy; load from ``cache_path`` when it exists."""
    if cache_path is not None and cache_path.is_file():
        state = torch.load(cache_path, map_location=policy.device, weights_only=True)
        policy.model.load_state_dict(state["model"])
        return {"warmup_steps": float(steps), "warmup_loss": float(state["loss"]), "warmup_seconds": 0.0,
                "warmup_cached": 1.0}
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100) * max(0.1, 1 - s / max(steps, 1)))
    prompts = [policy.encode_prompt(r.prompt) for r in records]
    answers = [policy.encode_answer(r.ground_truth) for r in records]
    policy.model.train()
    loss_value = float("nan")
    for step in range(steps):
        rows = torch.randint(len(records), (min(batch_size, len(records)),), generator=generator).tolist()
        sequences = [prompts[i] + answers[i] for i in rows]
        ids, mask = left_pad(sequences, policy.pad_id, policy.device)
        targets = torch.full_like(ids, -100)
        for row, i in enumerate(rows):
            n = len(answers[i])
            targets[row, ids.shape[1] - n:] = ids[row, ids.shape[1] - n:]
        logits = policy.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask)).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
        if step % 100 == 0:
            if step % 500 == 0:
                log.info("warm-up step %d/%d loss %.3f", step, steps, loss_value)
            if progress is not None:
                progress(step, steps, loss_value)
    policy.model.eval()
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_path.with_suffix(".partial")
        torch.save({"model": policy.model.state_dict(), "loss": loss_value}, partial)
        partial.replace(cache_path)
    return {"warmup_steps": float(steps), "warmup_loss": loss_value,
            "warmup_seconds": time.perf_counter() - start, "warmup_cached": 0.0}
