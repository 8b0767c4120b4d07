"""What a run config costs, in compute units the control plane turns into device-hours.

One unit is one forward pass of one token through one parameter (docs/limits.md, "The launch
forecast"). A config's cost is the sum of

- training: B x N x steps rollouts, each generated (about one forward pass over prompt and
  response) and trained on (forward and backward, about three): 4 x P x (prompt + response);
- evaluation: evaluations x held-out prompts x eval_k samples, generated only: 1 x P x tokens;
- the tiny model's supervised warm-up (local engine): warm-up steps x 64 sequences, forward and
  backward: 3 x P x tokens;

with P the model's parameters (from width, depth and vocabulary for the tiny model, from the
checkpoint folder's config.json otherwise) and tokens the mean prompt plus max_new_tokens.

The control plane prices a unit from the team's measured steps: device-seconds over the units
those steps' rollouts cost under their own runs' configs. A config like the measured runs is
forecast at their rate per rollout; twice the response length, width or samples, more.

Pure functions of a config mapping (a stored run's config may predate today's rules).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.engines.config import RunConfig, resolve_model

WARMUP_BATCH = 64  # sequences per supervised warm-up step (workers/engines/local/warmup.py)
TINY_VOCAB_AND_POSITIONS = 128  # the tiny GPT's character vocabulary plus positions, as embedding rows
UNKNOWN_MODEL_PARAMETERS = 1e9  # a checkpoint folder whose size cannot be read
CHARS_PER_TOKEN = 4.0  # a Hugging Face tokenizer's rough rate; the tiny model reads characters
GENERATE, TRAIN = 1.0, 3.0  # forward passes per token: generating; a forward and backward pass
_DEFAULTS = {f["name"]: f["default"] for f in RunConfig.describe()}


@dataclass(frozen=True)
class RunCost:
    parameters: float
    tokens: float  # prompt + response, per sequence
    training: float  # units
    evaluation: float
    warmup: float

    @property
    def total(self) -> float:
        return self.training + self.evaluation + self.warmup

    @property
    def per_rollout(self) -> float:
        """Units one training rollout costs: what a measured step's rollouts are weighed by."""
        return (GENERATE + TRAIN) * self.parameters * self.tokens


def run_cost(config: Mapping[str, Any], *, prompt_chars: float, eval_prompts_available: int | None) -> RunCost:
    """The units of a run of ``config`` (a RunConfig's fields; missing ones take the defaults),
    on prompts of ``prompt_chars`` characters on average, with ``eval_prompts_available``
    held-out prompts (None: not known; eval_prompts then counts as given)."""
    c = {**_DEFAULTS, **{k: v for k, v in config.items() if k in _DEFAULTS}}
    parameters = model_parameters(c)
    prompt_tokens = prompt_chars if c["model"] == "tiny" else prompt_chars / CHARS_PER_TOKEN
    tokens = max(prompt_tokens, 1.0) + _number(c["max_new_tokens"])
    steps = _number(c["steps"])
    rollouts = _number(c["batch_size"]) * _number(c["group_size"]) * steps
    training = rollouts * (GENERATE + TRAIN) * parameters * tokens
    every = _number(c["eval_every"])
    evaluations = 1 + math.ceil(steps / every) if every > 0 else 1  # at the start, every E steps, at the end
    held_out = _number(c["eval_prompts"])
    if eval_prompts_available is not None:  # eval_prompts 0 means all of them
        held_out = min(held_out, eval_prompts_available) if held_out else eval_prompts_available
    evaluation = evaluations * held_out * _number(c["eval_k"]) * GENERATE * parameters * tokens
    warmup = 0.0
    if c["model"] == "tiny" and c["engine"] == "local":
        warm_steps = _number(c["warmup_steps"]) + _number(c["warmup_noise_steps"])
        warmup = warm_steps * WARMUP_BATCH * TRAIN * parameters * tokens
    return RunCost(parameters=parameters, tokens=tokens, training=training, evaluation=evaluation, warmup=warmup)


def model_parameters(config: Mapping[str, Any]) -> float:
    """Parameters of the config's model: the tiny GPT's from its width and depth, a checkpoint's
    from its config.json (or its weight files' size), resolved under the models root."""
    if config.get("model", "tiny") == "tiny":
        layers, dim = _number(config.get("model_layers", 3)), _number(config.get("model_dim", 96))
        return 12 * layers * dim * dim + TINY_VOCAB_AND_POSITIONS * dim
    folder = resolve_model(str(config.get("model", "")))
    if folder is None:
        return UNKNOWN_MODEL_PARAMETERS
    return _checkpoint_parameters(str(folder))


@functools.lru_cache(maxsize=64)
def _checkpoint_parameters(folder: str) -> float:
    path = Path(folder)
    described = _from_config_json(path / "config.json")
    if described:
        return described
    try:  # two bytes a parameter (bf16/fp16), the common way checkpoints are shipped
        size = sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
    except OSError:
        size = 0
    return size / 2 if size else UNKNOWN_MODEL_PARAMETERS


def _from_config_json(path: Path) -> float:
    """L x (4h^2 attention + 3 h i gated MLP) + V x h, from a Hugging Face config.json."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(1024 * 1024 + 1)
        values = json.loads(raw) if len(raw) <= 1024 * 1024 else {}
    except (OSError, ValueError, RecursionError):
        return 0.0
    if not isinstance(values, dict):
        return 0.0
    values = {**values, **(values.get("text_config") or {})} if isinstance(values.get("text_config"), dict) else values
    hidden = _first(values, "hidden_size", "n_embd", "d_model")
    layers = _first(values, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(values, "vocab_size") or 32_000
    inner = _first(values, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    if not hidden or not layers or max(hidden, inner) > 1e6 or layers > 1e4 or vocab > 1e8:
        return 0.0  # not a shape a checkpoint has: its weight files tell instead
    return layers * (4 * hidden * hidden + 3 * hidden * inner) + vocab * hidden


def _first(values: Mapping[str, Any], *names: str) -> float:
    for name in names:
        value = values.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
    return 0.0


def _number(value: Any) -> float:
    """A stored config's number (a later release may have tightened its rules): 0 if unusable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(float(value), 0.0)
    return 0.0
