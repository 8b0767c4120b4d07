"""What the verl engine runs: every registered method whose layers it drives generically,
and, where verl computes a layer itself, an explicit adapter per method.

``EdgeplaneTrainer`` drives the pipeline's PRE_ROLLOUT (screening and gate, in
``_select_prompts``, selecting.py), ALLOCATION (two rollout phases with the pipeline's probe
size, allocating.py), POST_ROLLOUT (verl's ``filter_groups`` refills, our replay buffer applies
the pipeline's post-filter) and UPDATE (the replay buffer's ``finish``) for any method. The
ADVANTAGE is verl's own GRPO: an advantage method runs on verl only through an adapter here,
keyed by method name, which ``_compute_advantage`` (shaping.py) calls after GRPO. Imports
nothing of verl or torch at import time (``launch`` validates with it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.selection.decisions import Layer
from workers.selection.registry import REGISTRY

# The layers EdgeplaneTrainer runs for any method, through the pipeline's generic hooks.
GENERIC_LAYERS = frozenset({Layer.PRE_ROLLOUT, Layer.ALLOCATION, Layer.POST_ROLLOUT, Layer.UPDATE})


@dataclass(frozen=True)
class AdvantageAdapter:
    """How one advantage method maps onto verl's advantage step."""

    # verl's algorithm.norm_adv_by_std_in_grpo from the method's params
    norm_by_std: Callable[[Any], bool]
    # after verl's GRPO wrote its advantages: (trainer, batch meta, metrics) -> batch meta
    after_grpo: Callable[[Any, Any, dict[str, Any]], Any] | None = None


def _shape_rlzvp(trainer: Any, batch: Any, metrics: dict[str, Any]) -> Any:
    """RL-ZVP: rewrite the zero-variance groups verl's GRPO left at 0 (advantage.apply_rlzvp)."""
    from workers.engines.verl import advantage

    method = trainer.pipeline.advantage
    batch, shaped = advantage.apply_rlzvp(
        batch, metrics, alpha=float(method.params.alpha),
        norm_by_std=bool(trainer.config.algorithm.get("norm_adv_by_std_in_grpo", True)),
    )
    trainer.record_rlzvp(shaped)
    return batch


ADVANTAGE_ADAPTERS: Mapping[str, AdvantageAdapter] = {
    "grpo": AdvantageAdapter(norm_by_std=lambda p: bool(p.norm_by_std)),
    "rlzvp": AdvantageAdapter(norm_by_std=lambda p: bool(p.norm_by_std), after_grpo=_shape_rlzvp),
}


def unavailable(methods: Mapping[str, Any]) -> dict[str, str]:
    """Why verl cannot run some of ``methods`` (names of registered methods), by method."""
    problems = {}
    for name in methods:
        cls = REGISTRY.get(name)
        if cls is None:
            continue  # the pipeline's own check names unknown methods
        beyond = set(cls.layers) - GENERIC_LAYERS
        if Layer.ADVANTAGE in beyond and name in ADVANTAGE_ADAPTERS:
            beyond.discard(Layer.ADVANTAGE)
        if beyond:
            layers = ", ".join(sorted(str(layer) for layer in beyond))
            problems[name] = (
                f"not run by the verl engine: it acts at the {layers} layer, which verl computes "
                f"itself, and the verl engine has an adapter only for {', '.join(ADVANTAGE_ADAPTERS)} "
                "(workers/engines/verl/methods.py); use the local engine")
    return problems


def unsupported(methods: Mapping[str, Any]) -> list[str]:
    """Why verl cannot run some of ``methods`` (names of registered methods): one line each."""
    return [f"{name}: {reason}" for name, reason in unavailable(methods).items()]


def composition_problem(pipeline: Any) -> str | None:
    """What verl cannot run in a valid composition (a pipeline.Pipeline), or None: an allocator
    beside a zero-variance post-filter (verl's filter would evict a probe group first)."""
    allocator, owner = pipeline.allocator, pipeline.post_filter_owner
    if allocator is None or owner is None:
        return None
    return (f"{allocator.name} with {owner}'s zero-variance post-filter: on verl the filter would evict a probe "
            f"group before {allocator.name} allocates its extra rollouts; drop {owner}, set its post_filter to "
            "off, or use the local engine")
