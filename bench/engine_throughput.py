"""How fast the embedded engine samples and updates, beside a bare sampling loop.

On the default tiny model (RunConfig defaults, warmed up through the engine's cached
supervised warm-up, so it answers with real-length responses), for B prompts x N samples
(default 64 x 8 = 512 rows), in one process and on the same model and prompts:
- the engine's generation: ``sampling.sample`` exactly as ``LocalEngine.generate`` calls
  it (KV cache, per-token log-probs and full-vocabulary entropies), samples/s and
  generated tokens/s;
- a bare KV-cache loop written here: plain ``model(...)`` with ``past_key_values``,
  softmax + multinomial, no log-prob or entropy bookkeeping, same max_new_tokens and the
  same stop-at-end-of-text rule. Both draw from the same seeded generator, so they sample
  the very same tokens (checked): the ratio compares equal work. Aim: engine within 1.3x;
- one ``grpo_update`` over that batch with GRPO advantages (one mini-batch), seconds;
- one end-to-end ``LocalEngine.train_step()`` (plain GRPO, B x N), seconds and phases.
Engine and bare runs alternate within each repeat; every figure is the median over
repeats. The load average is recorded: the machine may be shared.

Run: .venv/bin/python bench/engine_throughput.py [--quick] [--tiny] [--out DIR]
Writes bench/results/engine_throughput.json (or DIR/engine_throughput.json).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._timing import write_results
from workers.engines.config import RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.local.model import Policy
from workers.engines.local.sampling import Rollouts, sample
from workers.engines.local.update import grpo_update
from workers.engines.telemetry import JsonlSink
from workers.selection.grpo import broadcast_to_tokens, group_advantages

AIM_RATIO = 1.3
# --tiny: a one-layer model and a short warm-up, for the test suite (seconds, not minutes).
TINY: dict[str, Any] = {"model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 100,
                        "warmup_noise_steps": 0, "task_train_size": 64, "task_test_size": 16}


@torch.no_grad()
def bare_sample(model: torch.nn.Module, prompts: list[list[int]], *, max_new_tokens: int, temperature: float,
                pad_id: int, eos_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The least a KV-cache sampler must do: returns (tokens (R, T), response mask (R, T))."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    position = mask.sum(dim=1, keepdim=True)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    tokens, live = [], []
    for t in range(max_new_tokens):
        draw = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator).squeeze(1)
        draw = draw.masked_fill(finished, pad_id)
        tokens.append(draw)
        live.append(~finished)
        finished = finished | (draw == eos_id)
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(position)], dim=1)
        out = model(input_ids=draw[:, None], attention_mask=mask, position_ids=position, past_key_values=past,
                    use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        position = position + 1
    return torch.stack(tokens, dim=1), torch.stack(live, dim=1)


def engine_sample(policy: Policy, prompts: list[list[int]], config: RunConfig, seed: int) -> Rollouts:
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    return sample(policy, prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                  top_p=config.top_p, generator=generator)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure_generation(engine: LocalEngine, prompts: list[list[int]], repeats: int) -> dict[str, Any]:
    policy, config = engine.policy, engine.config
    engine_s, bare_s, engine_tokens, bare_tokens = [], [], 0, 0
    for repeat in range(repeats + 1):  # the first round warms up allocators and caches
        seed = 1000 + repeat
        t_engine, rollouts = timed(lambda s=seed: engine_sample(policy, prompts, config, s))
        t_bare, (tokens, live) = timed(lambda s=seed: bare_sample(
            policy.model, prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
            pad_id=policy.pad_id, eos_id=policy.eos_id,
            generator=torch.Generator(device=policy.device).manual_seed(s)))
        width = tokens.shape[1]
        same = (torch.equal(rollouts.response_ids[:, :width], tokens)
                and torch.equal(rollouts.response_mask[:, :width], live)
                and not bool(rollouts.response_mask[:, width:].any()))
        if not same:
            raise AssertionError("the engine and the bare loop sampled different tokens from the same seed")
        if repeat:
            engine_s.append(t_engine)
            bare_s.append(t_bare)
            engine_tokens, bare_tokens = int(rollouts.response_mask.sum()), int(live.sum())
    rows = len(prompts)
    e, b = statistics.median(engine_s), statistics.median(bare_s)
    return {
        "rows": rows,
        "tokens_per_batch": engine_tokens,
        "mean_response_tokens": engine_tokens / rows,
        "engine_seconds": e,
        "bare_seconds": b,
        "engine_samples_per_s": rows / e,
        "bare_samples_per_s": rows / b,
        "engine_tokens_per_s": engine_tokens / e,
        "bare_tokens_per_s": bare_tokens / b,
        "ratio_engine_over_bare": e / b,
        "engine_seconds_all": engine_s,
        "bare_seconds_all": bare_s,
    }


def measure_update(engine: LocalEngine, prompts: list[list[int]], keys: list[str], group: int,
                   repeats: int) -> dict[str, Any]:
    """One grpo_update over the batch, each repeat from the same weights and optimiser state."""
    policy, config = engine.policy, engine.config
    rollouts = engine_sample(policy, prompts, config, seed=7)
    sizes = np.full(len(keys), group)
    rewards = np.concatenate(engine.score(keys, sizes, rollouts))
    group_ids = np.repeat(np.arange(len(keys)), group)
    token_adv = broadcast_to_tokens(group_advantages(rewards, group_ids), rollouts.response_mask.cpu().numpy())
    advantages = torch.as_tensor(token_adv, dtype=torch.float32, device=policy.device)
    copy_policy = Policy(copy.deepcopy(policy.model), policy.tokenizer, policy.eos_id, policy.pad_id, policy.kind)
    start_weights = copy.deepcopy(copy_policy.model.state_dict())
    rows = [torch.arange(len(prompts), device=policy.device)]
    weights = torch.ones(len(prompts), device=policy.device)
    seconds = []
    for repeat in range(repeats + 1):
        copy_policy.model.load_state_dict(start_weights)
        optimizer = torch.optim.AdamW(copy_policy.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        t, stats = timed(lambda opt=optimizer: grpo_update(
            copy_policy, opt, rollouts, rows, lambda number, entropy: advantages, weights,
            clip_low=config.clip_low, clip_high=config.clip_high, temperature=config.temperature,
            grad_clip=config.grad_clip, dr_grpo=config.dr_grpo, max_new_tokens=config.max_new_tokens))
        if repeat:
            seconds.append(t)
    return {"update_seconds": statistics.median(seconds), "update_seconds_all": seconds,
            "update_tokens": stats.tokens, "reward_mean": float(rewards.mean()),
            "mixed_groups": int(sum(0 < rewards[i * group:(i + 1) * group].sum() < group for i in range(len(keys))))}


def measure_train_step(engine: LocalEngine, repeats: int) -> dict[str, Any]:
    totals, phases = [], []
    for repeat in range(repeats + 1):
        t, record = timed(engine.train_step)
        engine.step += 1
        if repeat:
            totals.append(t)
            phases.append(record.summary.seconds)
    return {
        "train_step_seconds": statistics.median(totals),
        "train_step_seconds_all": totals,
        "train_step_phase_seconds": {name: statistics.median(p[name] for p in phases) for name in phases[0]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="B: prompts per batch")
    parser.add_argument("--group", type=int, default=8, help="N: samples per prompt")
    parser.add_argument("--repeats", type=int, default=11, help="timed repeats of each figure (median)")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--tiny", action="store_true",
                        help="a one-layer model, 100 warm-up steps, 8 x 4 rows, 1 repeat")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier on a shared machine")
    parser.add_argument("--var", type=Path, default=Path("var"), help="warm-up cache folder (default var/)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    if args.tiny:
        overrides, args.prompts, args.group, args.repeats = dict(TINY), 8, 4, 1
    elif args.quick:
        args.repeats = 3
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = RunConfig.from_mapping({**overrides, "batch_size": args.prompts, "group_size": args.group,
                                     "selectors": {"grpo": {}}, "eval_every": 0, "checkpoint_every": 0})
    with tempfile.TemporaryDirectory() as scratch:
        engine = LocalEngine(config, scratch, JsonlSink(scratch), var_dir=args.var)
        warmup = engine._warm_up()
        keys = [r.key for r in engine.train[: args.prompts]]
        prompts = [engine.encoded(k) for k in keys for _ in range(args.group)]
        generation = measure_generation(engine, prompts, args.repeats)
        update = measure_update(engine, prompts, keys, args.group, args.repeats)
        step = measure_train_step(engine, args.repeats)
    figures = {**generation, **update, **step}
    ratio = figures["ratio_engine_over_bare"]
    rows = figures["rows"]
    print(f"engine throughput, {args.prompts} prompts x {args.group} samples = {rows} rows, "
          f"median of {args.repeats}; model {engine.policy.n_parameters:,} parameters, "
          f"max_new_tokens {config.max_new_tokens}, {figures['mean_response_tokens']:.2f} tokens/response, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"  {'':28s} {'seconds':>9s} {'samples/s':>10s} {'tokens/s':>10s}")
    print(f"  {'engine sample()':28s} {figures['engine_seconds']:9.4f} {figures['engine_samples_per_s']:10.0f} "
          f"{figures['engine_tokens_per_s']:10.0f}")
    print(f"  {'bare KV-cache loop':28s} {figures['bare_seconds']:9.4f} {figures['bare_samples_per_s']:10.0f} "
          f"{figures['bare_tokens_per_s']:10.0f}")
    print(f"  engine / bare: {ratio:.3f}x  aim within {AIM_RATIO}x: {'met' if ratio <= AIM_RATIO else 'MISSED'}")
    print(f"  {'grpo_update (1 mini-batch)':28s} {figures['update_seconds']:9.4f}   "
          f"({figures['update_tokens']} tokens, {figures['mixed_groups']} of {args.prompts} groups mixed)")
    phases = "  ".join(f"{k} {v:.3f}" for k, v in figures["train_step_phase_seconds"].items())
    print(f"  {'train_step() end to end':28s} {figures['train_step_seconds']:9.4f}   ({phases})")
    path = write_results("engine_throughput", {
        "prompts": args.prompts, "group_size": args.group, "repeats": args.repeats, "tiny": args.tiny,
        "model_parameters": engine.policy.n_parameters, "max_new_tokens": config.max_new_tokens,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "warmup": warmup,
        "aim_ratio": AIM_RATIO, "aim_met": ratio <= AIM_RATIO, "figures": figures,
    }, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
