"""The built-in warm start: the tiny model's supervised warm-up, shipped with the code.

The default run (the tiny model on the built-in testbed family add_aligned, the default
warm-up settings) starts RL from a warm-up of 4,900 supervised steps: about 4 minutes on 2
CPU cores. The project's own warm-up of those settings ships here, in half precision
(``warm_starts/<key>.pt``, under 1 MB, with ``<key>.json``: the settings, the pass rates per
level measured when it was made, the torch version and the command). The engine loads it,
cast back to float32, when a run's warm-up key is a shipped one and var/warmup holds no cache
for it; any other warm-up (another family, shape, warm-up setting or seed) trains as before.

The key is ``warmup_key``'s: what determines the model (what it trains on, its shape and
characters, the warm-up settings and seed, WARMUP_VERSION), never a file path. A change to the
defaults or to WARMUP_VERSION orphans the shipped file (tests/engines/local/test_warm_start.py
says so); remake it:

    python -m workers.engines.local.warm_start_remake

It trains from scratch with the defaults (minutes), writes the checkpoint and its manifest into
``warm_starts/`` (``--out`` elsewhere), removes the orphaned ones there, and prints the pass rates
per level and the size. bench/warm_start.py checks that a remade one behaves as the shipped one.

Importing this module is cheap (no torch, no engine): the engine loads through it, and the
control plane's forecast asks it whether a config's warm-up ships (``shipped_for``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.engines.local.model import Policy

# Bump when the warm-up's code changes what it trains: older caches (and the shipped warm
# start) then stop matching.
WARMUP_VERSION = 2
SHIPPED = Path(__file__).resolve().parent / "warm_starts"
MAX_BYTES = 1024 * 1024  # a shipped checkpoint's limit: it lives in the repository
# The tiny GPT's activation (model.py): part of the key, as the engine reads it off the model.
TINY_ACTIVATION = "gelu_pytorch_tanh"
# A built-in family's model has at least this many positions (engine._build_policy).
FAMILY_POSITIONS = 64
REMAKE = "python -m workers.engines.local.warm_start_remake"


def warmup_key(*, source: str, layers: int, dim: int, heads: int, n_positions: int, activation: str, charset: str,
               steps: int, lr: float, noise_steps: int, noise: float, seed: int) -> str:
    """The warm-up cache's key: a hash of everything that determines the warmed-up model."""
    return hashlib.sha256(json.dumps([
        source, layers, dim, heads, n_positions, activation, charset, steps, lr, noise_steps, noise, seed,
        WARMUP_VERSION,
    ]).encode()).hexdigest()[:24]


def family_key(config: Mapping[str, Any], family: str) -> str | None:
    """The key a tiny local run of ``config`` (RunConfig's fields; missing ones take the
    defaults) gets on the built-in ``family``'s prompts, worked out without building the run;
    None when it has no warm-up here or the config alone cannot tell it (a response so long
    that the model's positions depend on which prompts the split holds)."""
    from workers.engines.config import RunConfig
    from workers.problems import arithmetic

    c = {**{f["name"]: f["default"] for f in RunConfig.describe()}, **config}
    known = arithmetic.TASKS.get(family)
    if (c["model"] != "tiny" or c["engine"] != "local" or known is None or not known.warmup_mix
            or int(c["warmup_steps"]) + int(c["warmup_noise_steps"]) <= 0):
        return None
    top = max(known.levels)
    largest = 10**top - 1
    longest = len(known.prompt(top, largest, largest)) + len(known.answer(largest, largest))
    if longest + int(c["max_new_tokens"]) + 8 > FAMILY_POSITIONS:
        return None
    return warmup_key(source=f"stream:{family}", layers=int(c["model_layers"]), dim=int(c["model_dim"]),
                      heads=int(c["model_heads"]), n_positions=FAMILY_POSITIONS, activation=TINY_ACTIVATION,
                      charset="".join(sorted(set(arithmetic.CHARSET))), steps=int(c["warmup_steps"]),
                      lr=c["warmup_lr"], noise_steps=int(c["warmup_noise_steps"]), noise=c["warmup_noise"],
                      seed=int(c["warmup_seed"]))


def shipped_path(key: str, folder: Path = SHIPPED) -> Path | None:
    path = folder / f"{key}.pt"
    return path if path.is_file() else None


def shipped_for(config: Mapping[str, Any], family: str) -> bool:
    """Whether a run of ``config`` on the built-in ``family`` loads a shipped warm start (no
    warm-up to pay for)."""
    key = family_key(config, family)
    return key is not None and shipped_path(key) is not None


def load(key: str, policy: Policy, folder: Path = SHIPPED) -> dict[str, float] | None:
    """Load the shipped warm start ``key`` into ``policy`` (float32 again); the warm-up's
    figures as a cached warm-up reports them, or None when none ships for the key."""
    path = shipped_path(key, folder)
    if path is None:
        return None
    import torch

    state = torch.load(path, map_location=policy.device, weights_only=True)
    dtype = next(policy.model.parameters()).dtype
    policy.model.load_state_dict({name: value.to(dtype) for name, value in state["model"].items()})
    return {"warmup_steps": float(state["steps"]), "warmup_loss": float(state["loss"]), "warmup_seconds": 0.0,
            "warmup_cached": 1.0, "warmup_shipped": 1.0}


def half(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict in half precision, each tensor its own compact storage."""
    return {name: value.detach().to("cpu").half().clone() for name, value in state.items()}


def manifests(folder: Path = SHIPPED) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# The RunConfig fields a warm start's key holds (with the family, model positions and characters).
SETTINGS = ("model", "model_layers", "model_dim", "model_heads", "max_new_tokens", "warmup_steps", "warmup_lr",
            "warmup_noise_steps", "warmup_noise", "warmup_seed")
