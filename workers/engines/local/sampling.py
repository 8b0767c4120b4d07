"""Batched sampling with a KV cache, recording what RL needs per response token:
the log-probability of the sampled token and the full-vocabulary entropy, both of the
temperature-scaled distribution (top-p shapes the draw, not these numbers, as in verl).

Layout shared with the update: prompts left-padded to a common length P, responses of
up to T tokens after them, so position p of the response is column P + p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.engines.local.model import Policy


class NonFiniteLogits(RuntimeError):
    """The model's outputs are NaN or infinite: its weights are broken."""


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor  # (R, P) left-padded
    prompt_mask: torch.Tensor  # (R, P) bool
    response_ids: torch.Tensor  # (R, T) pad after the end
    response_mask: torch.Tensor  # (R, T) bool: sampled tokens, end-of-text included
    logprobs: torch.Tensor  # (R, T)
    entropy: torch.Tensor  # (R, T)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)

    def __len__(self) -> int:
        return int(self.response_ids.shape[0])


def left_pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool, device=device)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.as_tensor(seq, device=device)
            mask[row, width - len(seq):] = True
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop = probs.cumsum(dim=-1) - probs > top_p  # keep the token that crosses p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


@torch.no_grad()
def sample(
    policy: Policy,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """One response per prompt row (repeat a prompt for a group)."""
    model, device = policy.model, policy.device
    ids, mask = left_pad(prompts, policy.pad_id, device)
    rows = ids.shape[0]
    out = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask), use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    next_position = mask.long().sum(dim=1)
    attention = mask.long()
    tokens = torch.full((rows, max_new_tokens), policy.pad_id, dtype=torch.long, device=device)
    response_mask = torch.zeros((rows, max_new_tokens), dtype=torch.bool, device=device)
    logprobs = torch.zeros((rows, max_new_tokens), device=device)
    entropy = torch.zeros((rows, max_new_tokens), device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteLogits(f"the policy produced non-finite logits at response token {t}")
        scaled = logits.float() / temperature
        logp = torch.log_softmax(scaled, dim=-1)
        probs = torch.softmax(top_p_filter(scaled, top_p), dim=-1)
        draw = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        draw = torch.where(finished, torch.full_like(draw, policy.pad_id), draw)
        live = ~finished
        tokens[:, t] = draw
        response_mask[:, t] = live
        logprobs[:, t] = torch.where(live, logp.gather(1, draw[:, None]).squeeze(1), 0.0)
        entropy[:, t] = torch.where(live, -(logp.exp() * logp).sum(dim=-1), 0.0)
        finished = finished | (draw == policy.eos_id)
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones((rows, 1), dtype=attention.dtype, device=device)], dim=1)
        out = model(input_ids=draw[:, None], attention_mask=attention, position_ids=next_position[:, None],
                    past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        next_position = next_position + 1
    return Rollouts(ids, mask, tokens, response_mask, logprobs, entropy)


def concat(parts: list[Rollouts], pad_id: int) -> Rollouts:
    """Join rollouts sampled in separate calls (different prompt and response widths)."""
    width_p = max(p.prompt_ids.shape[1] for p in parts)
    width_t = max(p.response_ids.shape[1] for p in parts)

    def pad_left(x: torch.Tensor, width: int, value: float | bool) -> torch.Tensor:
        return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

    def pad_right(x: torch.Tensor, width: int, value: float | bool) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    return Rollouts(
        torch.cat([pad_left(p.prompt_ids, width_p, pad_id) for p in parts]),
        torch.cat([pad_left(p.prompt_mask, width_p, False) for p in parts]),
        torch.cat([pad_right(p.response_ids, width_t, pad_id) for p in parts]),
        torch.cat([pad_right(p.response_mask, width_t, False) for p in parts]),
        torch.cat([pad_right(p.logprobs, width_t, 0.0) for p in parts]),
        torch.cat([pad_right(p.entropy, width_t, 0.0) for p in parts]),
    )


def select_rows(rollouts: Rollouts, rows: torch.Tensor) -> Rollouts:
    return Rollouts(*(getattr(rollouts, f)[rows] for f in
                      ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "entropy")))
