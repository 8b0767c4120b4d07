"""The one place that knows which methods exist: ``REGISTRY``, name -> selector class.

Registration order is the method order the form, the chart legends and the error listing
the valid methods use; the built-ins register as grpo, dapo, greso, hive, hora, rlzvp,
lze. A new method is one module with its ``Selector`` subclass and one ``register`` call::

    @register
    class RandomSkip(Selector[RandomSkipParams]): ...
"""

from __future__ import annotations

from typing import Any, TypeVar

from workers.selection.decisions import REASONS
from workers.selection.methods import BUILTIN
from workers.selection.selector import Selector

REGISTRY: dict[str, type[Selector[Any]]] = {}
# The advantage of a run that names no ADVANTAGE method (docs/algorithms.md §0).
DEFAULT_ADVANTAGE = "grpo"
S = TypeVar("S", bound=type[Selector[Any]])


def register(cls: S) -> S:
    """Add a method (its decision reasons too); usable as a class decorator."""
    name = getattr(cls, "name", "")
    if not name or not name.isidentifier():
        raise ValueError(f"{cls.__name__}: a selector needs a name that is an identifier, got {name!r}")
    if name in REGISTRY:
        raise ValueError(f"a method named {name!r} is registered already ({REGISTRY[name].__name__})")
    for attr in ("label", "help", "layers", "Params"):
        if not hasattr(cls, attr):
            raise ValueError(f"{cls.__name__}: a selector declares {attr}")
    if not cls.layers:
        raise ValueError(f"{cls.__name__}: a selector acts at one layer at least")
    if cls.Params.method != name:
        raise ValueError(f"{cls.__name__}: its Params.method is {cls.Params.method!r}, not {name!r}")
    clash = sorted(set(cls.reasons) & set(REASONS))
    if clash:
        raise ValueError(f"{cls.__name__}: decision reasons {', '.join(clash)} exist already")
    REASONS.update(cls.reasons)
    REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method and the decision reasons it brought (tests register their own)."""
    cls = REGISTRY.pop(name)
    for reason in cls.reasons:
        REASONS.pop(reason, None)


def lookup(name: str) -> type[Selector[Any]]:
    """The method's class; an unknown name fails listing the valid ones."""
    from workers.selection.params import SelectionConfigError

    if name not in REGISTRY:
        raise SelectionConfigError("selectors", f"unknown method {name!r}; valid methods are {', '.join(REGISTRY)}")
    return REGISTRY[name]


for _cls in BUILTIN:
    register(_cls)
