"""The GRPO update: PPO's clipped surrogate with clip-higher, token-level aggregation
(or Dr. GRPO's constant normaliser), AdamW, gradient clipping, mini-batches of whole
groups. Advantages are asked for per mini-batch, given the entropies of this very
forward pass (detached): RL-ZVP shapes with the policy being optimised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from workers.engines.local.model import Policy
from workers.engines.local.sampling import Rollouts, positions, select_rows

# (mini-batch number, its detached entropies (rows, T)) -> token advantages (rows, T)
AdvantageFn = Callable[[int, torch.Tensor], torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient stopped being a finite number."""


@dataclass
class UpdateStats:
    loss: float
    grad_norm: float
    clip_fraction: float
    entropy_mean: float
    approx_kl: float
    tokens: int


def response_logprobs(policy: Policy, batch: Rollouts, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies of the response tokens under the current policy."""
    ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    logits = policy.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask)).logits
    width = batch.prompt_ids.shape[1]
    steps = batch.response_ids.shape[1]
    # Logits at column c predict the token at column c + 1.
    scaled = logits[:, width - 1: width - 1 + steps, :].float() / temperature
    logp_all = torch.log_softmax(scaled, dim=-1)
    logp = logp_all.gather(2, batch.response_ids[:, :, None]).squeeze(2)
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)
    return logp, entropy


def grpo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batch: Rollouts,
    minibatches: list[torch.Tensor],
    advantage_fn: AdvantageFn,
    rollout_weights: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    temperature: float,
    grad_clip: float,
    dr_grpo: bool,
    max_new_tokens: int,
) -> UpdateStats:
    """One optimizer step per mini-batch (lists of batch rows holding whole groups)."""
    policy.model.train()
    totals = {"loss": 0.0, "grad_norm": 0.0, "clipped": 0.0, "entropy": 0.0, "kl": 0.0, "tokens": 0}
    for number, rows in enumerate(minibatches):
        part = select_rows(batch, rows)
        logp, entropy = response_logprobs(policy, part, temperature)
        mask = part.response_mask.float()
        advantages = advantage_fn(number, entropy.detach()).to(logp.dtype)
        log_ratio = logp - part.logprobs
        ratio = torch.exp(log_ratio)
        unclipped = -advantages * ratio
        clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
        per_token = torch.maximum(unclipped, clipped) * rollout_weights[rows, None] * mask
        # Token-level: every response token of the mini-batch counts once. Dr. GRPO: a
        # constant normaliser, so long and short responses are not re-weighted.
        normaliser = rows.numel() * max_new_tokens if dr_grpo else mask.sum().clamp(min=1.0)
        loss = per_token.sum() / normaliser
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} in mini-batch {number}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), grad_clip)
        if not math.isfinite(float(grad_norm)):
            raise TrainingDiverged(f"the gradient norm became {float(grad_norm)} in mini-batch {number}")
        optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in policy.model.parameters()):
            raise TrainingDiverged(f"the weights stopped being finite after mini-batch {number}")
        tokens = float(mask.sum())
        totals["loss"] += float(loss.detach())
        totals["grad_norm"] += float(grad_norm)
        totals["clipped"] += float(((clipped > unclipped).float() * mask).sum())
        totals["entropy"] += float((entropy.detach() * mask).sum())
        totals["kl"] += float((-log_ratio.detach() * mask).sum())
        totals["tokens"] += int(tokens)
    policy.model.eval()
    n = max(len(minibatches), 1)
    tokens = max(totals["tokens"], 1)
    return UpdateStats(
        loss=totals["loss"] / n,
        grad_norm=totals["grad_norm"] / n,
        clip_fraction=totals["clipped"] / tokens,
        entropy_mean=totals["entropy"] / tokens,
        approx_kl=totals["kl"] / tokens,
        tokens=int(totals["tokens"]),
    )
