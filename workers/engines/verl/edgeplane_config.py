"""The ``edgeplane`` section of a verl config: what the launcher writes there for our trainer
(the selection methods, the audit share), read the same way by the trainer, its checkpoint
callback and the tests, and the selection pipeline built from it."""

from __future__ import annotations

import json
from typing import Any

from workers.selection.pipeline import AUDIT_SHARE, Pipeline
from workers.selection.registry import DEFAULT_ADVANTAGE


def edgeplane_section(config: Any) -> Any:
    """``config.edgeplane`` (None when the config has no such section)."""
    return config.get("edgeplane", None) if hasattr(config, "get") else None


def selection_methods(config: Any) -> dict[str, dict[str, Any]]:
    """``edgeplane.methods`` of a verl config: a JSON text or a mapping; {} when absent."""
    section = edgeplane_section(config)
    raw = section.get("methods", None) if section is not None else None
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = json.loads(raw)
    from omegaconf import DictConfig, OmegaConf

    if isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    return {str(k): dict(v or {}) for k, v in dict(raw).items()}


def pipeline_methods(config: Any) -> dict[str, dict[str, Any]]:
    """The methods the trainer runs: ``edgeplane.methods``, plain GRPO when none are given."""
    return selection_methods(config) or {DEFAULT_ADVANTAGE: {}}


def pipeline_audit_share(config: Any) -> float:
    """``edgeplane.audit_share`` of a verl config (the pipeline's default when absent)."""
    section = edgeplane_section(config)
    audit = section.get("audit_share", None) if section is not None else None
    return AUDIT_SHARE if audit is None else float(audit)


def build_pipeline(config: Any) -> Pipeline:
    return Pipeline(
        pipeline_methods(config),
        batch_size=int(config.data.train_batch_size),
        group_size=int(config.actor_rollout_ref.rollout.n),
        seed=int(config.data.get("seed", 0) or 0),
        audit_share=pipeline_audit_share(config),
    )
