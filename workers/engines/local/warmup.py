"""Supervised warm-up of the tiny model so that RL starts on a real learning edge.

A randomly initialised GPT answers nothing right, every group is all-wrong and GRPO has
no signal. A short supervised phase on (prompt, answer) pairs of the train split brings
it to partial skill; the result is cached under var/ by a hash of everything it depends
on, so repeated runs (and the tests) pay for it once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from workers.engines.local.model import Policy
from workers.engines.local.sampling import left_pad, positions
from workers.problems.dataset import PromptRecord

log = logging.getLogger(__name__)
DIGITS = "0123456789"  # what the noisy phase may put in place of an answer digit
# ``progress`` is called every PROGRESS_STEPS steps, and sooner once PROGRESS_SECONDS passed
# since the last call: a slow model still reports (and hears a cancel) every few seconds.
PROGRESS_STEPS = 100
PROGRESS_SECONDS = 2.0


class WarmupStopped(Exception):
    """Raised by a ``progress`` callback to stop the warm-up (cancelled, or out of budget):
    nothing is cached, and the engine ends the run with ``control``'s status."""

    def __init__(self, control: str, step: int, steps: int) -> None:
        self.control, self.step, self.steps = control, step, steps
        super().__init__(f"warm-up stopped ({control}) at step {step}/{steps}")


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
    stream: Callable[[int], list[tuple[str, str]]] | None = None,
    noise_steps: int = 0,
    noise: float = 0.0,
) -> dict[str, float]:
    """Train on answers with cross-entropy; load from ``cache_path`` when it exists.

    Phase 1 (``steps``): batches of the records, or of ``stream`` when given (fresh problems
    that are never RL prompts). Phase 2 (``noise_steps``, lr / 2): the same source with each
    answer digit replaced by another digit with probability ``noise``. Greedy decoding keeps
    the right answer while sampling at temperature 1 spreads mass onto near misses: the
    latent competence that RL with a verifiable reward sharpens.

    ``progress(step, steps, loss)`` is called at step 0, then every PROGRESS_STEPS steps or
    PROGRESS_SECONDS seconds, whichever comes first; it may raise ``WarmupStopped`` to stop.
    """
    total = steps + noise_steps
    if cache_path is not None and cache_path.is_file():
        state = torch.load(cache_path, map_location=policy.device, weights_only=True)
        policy.model.load_state_dict(state["model"])
        return {"warmup_steps": float(total), "warmup_loss": float(state["loss"]), "warmup_seconds": 0.0,
                "warmup_cached": 1.0}
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    corrupt = random.Random(f"warmup-noise:{seed}")
    if stream is not None:
        def draw(n: int) -> list[tuple[list[int], list[int]]]:
            return [(policy.encode_prompt(q), policy.encode_answer(a)) for q, a in stream(n)]
    else:
        encoded = [(policy.encode_prompt(r.prompt), policy.encode_answer(r.ground_truth)) for r in records]

        def draw(n: int) -> list[tuple[list[int], list[int]]]:
            rows = torch.randint(len(encoded), (min(n, len(encoded)),), generator=generator).tolist()
            return [encoded[i] for i in rows]

    digit_ids = {policy.encode_answer(d)[0] for d in DIGITS} if policy.kind == "tiny" else set()

    def noisy(n: int) -> list[tuple[list[int], list[int]]]:
        out = []
        for prompt, answer in draw(n):
            answer = [corrupt.choice(sorted(digit_ids - {t})) if t in digit_ids and corrupt.random() < noise else t
                      for t in answer]
            out.append((prompt, answer))
        return out

    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * max(0.1, 1 - s / max(steps, 1)) if s < steps else 0.5)
    policy.model.train()
    loss_value = float("nan")
    reported = time.perf_counter()
    for step in range(total):
        pairs = draw(batch_size) if step < steps else noisy(batch_size)
        loss_value = _supervised_step(policy, optimizer, pairs)
        schedule.step()
        if step % 500 == 0:
            log.info("warm-up step %d/%d loss %.3f", step, total, loss_value)
        if progress is not None and (step % PROGRESS_STEPS == 0
                                     or time.perf_counter() - reported >= PROGRESS_SECONDS):
            progress(step, total, loss_value)
            reported = time.perf_counter()
    policy.model.eval()
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_path.with_suffix(".partial")
        torch.save({"model": policy.model.state_dict(), "loss": loss_value}, partial)
        partial.replace(cache_path)
    return {"warmup_steps": float(total), "warmup_loss": loss_value,
            "warmup_seconds": time.perf_counter() - start, "warmup_cached": 0.0}


def _supervised_step(policy: Policy, optimizer: torch.optim.Optimizer,
                     pairs: list[tuple[list[int], list[int]]]) -> float:
    """One cross-entropy step on the answer tokens of (prompt ids, answer ids) pairs."""
    ids, mask = left_pad([q + a for q, a in pairs], policy.pad_id, policy.device)
    targets = torch.full_like(ids, -100)
    for row, (_, answer) in enumerate(pairs):
        n = len(answer)
        targets[row, ids.shape[1] - n:] = ids[row, ids.shape[1] - n:]
    logits = policy.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask)).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())
