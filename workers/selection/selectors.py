"""Kept for importers of the former single module: the registry and the built-in selectors.

New code imports ``workers.selection.registry`` (REGISTRY, register, unregister) and the
method classes from ``workers.selection.methods``.
"""

from __future__ import annotations

from workers.selection.methods import Dapo, Greso, Grpo, Hive, Hora, Lze, Rlzvp
from workers.selection.registry import REGISTRY, register, unregister
from workers.selection.selector import PromptEntropyFn, Selector

__all__ = ["REGISTRY", "Dapo", "Greso", "Grpo", "Hive", "Hora", "Lze", "PromptEntropyFn", "Rlzvp", "Selector",
           "register", "unregister"]
