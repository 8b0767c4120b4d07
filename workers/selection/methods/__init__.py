"""The built-in methods, one module each: the selector class, its layers, constraints and
panels; the math stays in the modules of the same name one level up."""

from __future__ import annotations

from typing import Any

from workers.selection.methods.dapo import Dapo
from workers.selection.methods.greso import Greso, HistoryFilter
from workers.selection.methods.grpo import Grpo
from workers.selection.methods.hive import Hive
from workers.selection.methods.hora import Hora
from workers.selection.methods.lze import Lze
from workers.selection.methods.rlzvp import Rlzvp
from workers.selection.selector import Selector

# Registration order is the method order of the form and the chart legends.
BUILTIN: tuple[type[Selector[Any]], ...] = (Grpo, Dapo, Greso, Hive, Hora, Rlzvp, Lze)

__all__ = ["BUILTIN", "Dapo", "Greso", "Grpo", "HistoryFilter", "Hive", "Hora", "Lze", "Rlzvp"]
