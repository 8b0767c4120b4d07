"""What every method's typed parameters are (MethodParams: one line of help per field, the checks that
turn an impossible value into a message naming the field and the fix); each method declares
its own in its module (methods/<name>.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self


class SelectionConfigError(ValueError):
    """A selection config that cannot run; ``field`` names the offending setting.

    A composition check reports every problem at once: ``problems`` lists them all, the
    first being this error's own ``field`` and ``message``."""

    def __init__(self, field_name: str, message: str,
                 problems: Sequence[SelectionConfigError] | None = None) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.problems: list[SelectionConfigError] = list(problems) if problems else [self]


def described(text: str, default: Any) -> Any:
    """A parameter field with one line of help (what the form and RunConfig.describe show)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class MethodParams:
    method: ClassVar[str] = ""

    def check(self) -> None:
        """Raise SelectionConfigError for a value no run can use."""

    def _require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            raise SelectionConfigError(f"{self.method}.{name}", message)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Self:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SelectionConfigError(
                f"{cls.method}.{unknown[0]}",
                f"unknown parameter; {cls.method} takes {', '.join(sorted(known)) or 'no parameters'}",
            )
        params = cls(**values)
        params.check()
        return params

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Name, default and help of every field: what a form or a CLI shows."""
        return [
            {"name": f.name, "default": f.default, "help": f.metadata.get("help", "")}
            for f in dataclasses.fields(cls)
        ]
