"""What every method's typed parameters are (MethodParams: one line of help per field, the checks that
turn an impossible value into a message naming the field and the fix); each method declares
its own in its module (methods/<name>.py).

Every numeric parameter declares its range (``described(..., bounds=(lo, hi))``, both ends
accepted): ``from_mapping`` refuses a value of the wrong kind (text, a list, a bool, NaN or
infinity where a number belongs) or outside its range with a message naming the parameter,
the value and the range. ``check_number`` is the same rule for RunConfig's fields.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

Bounds = tuple[float, float]
_SHOWN_VALUE = 60  # longest echo of a refused value in a message


def shown(value: Any) -> str:
    """A refused value as a message quotes it: short, whatever the user sent. reprlib stops at a
    few items and levels: a full repr of a YAML alias bomb's lists would never end."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4300-digit conversion limit
        return f"a {value.bit_length()}-bit number" if isinstance(value, int) else "a value too large to show"
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = _SHOWN_VALUE


def format_bounds(bounds: Bounds) -> str:
    lo, hi = bounds
    return f"[{_number(lo)}, {_number(hi)}]"


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return f"{value:g}"


def check_number(value: Any, kind: str, bounds: Bounds | None) -> tuple[Any, str]:
    """(the value as ``kind`` ("int" or "float"), "") or (value, what is wrong and the range).

    Whole numbers are accepted where a float belongs, and text that reads as a finite number
    (YAML 1.1 reads 5e-4, with no dot, as text); NaN, infinity, bools, lists and mappings never.
    """
    where = f" (range {format_bounds(bounds)})" if bounds else ""
    if kind == "int":
        # 4.0 from a JSON client is a whole number; 4.5, "4" and True are not.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return value, f"must be a whole number, got {shown(value)}{where}"
    else:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return value, f"must be a number, got {shown(value)}{where}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return value, f"must be a number, got {shown(value)}{where}"
        try:
            value = float(value)
        except OverflowError:  # a whole number past float's range, as JSON and YAML allow
            return value, f"must be a finite number, got {shown(value)}{where}"
        if not math.isfinite(value):
            return value, f"must be a finite number, got {shown(value)}{where}"
    if bounds is not None and value < bounds[0]:
        return value, f"must be >= {_number(bounds[0])}, got {shown(value)}{where}"
    if bounds is not None and value > bounds[1]:
        return value, f"must be <= {_number(bounds[1])}, got {shown(value)}{where}"
    return value, ""


def field_kind(annotation: Any) -> str:
    """"int", "float", "bool", "str" or the annotation's text, from a dataclass field's type."""
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


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


def described(text: str, default: Any, *, bounds: Bounds | None = None) -> Any:
    """A parameter field with one line of help (what the form and RunConfig.describe show) and,
    for a number, its range (both ends accepted)."""
    metadata: dict[str, Any] = {"help": text}
    if bounds is not None:
        metadata["range"] = bounds
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class MethodParams:
    method: ClassVar[str] = ""

    def check(self) -> None:
        """Raise SelectionConfigError for a value no run can use."""

    def _require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            problem = SelectionConfigError(f"{self.method}.{name}", message)
            collected = self.__dict__.get("_collected")
            if collected is None:
                raise problem
            collected.append(problem)  # ``problems``: every failed check, not the first only

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Self:
        problems = cls.problems(values)
        if problems:
            raise SelectionConfigError(problems[0].field, problems[0].message, problems=problems)
        return cls(**_clean(cls, dict(values or {}))[0])

    @classmethod
    def problems(cls, values: Mapping[str, Any] | None) -> list[SelectionConfigError]:
        """Every problem of these parameters at once: each unknown name, each value of the wrong
        kind or out of its range, then each failed ``check`` of the usable values (a refused
        value takes its default there, and a check on a refused value is not said twice)."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        takes = ", ".join(sorted(known)) or "no parameters"
        found = [SelectionConfigError(f"{cls.method}.{name}", f"unknown parameter; {cls.method} takes {takes}")
                 for name in sorted(set(values) - known, key=str)]
        clean, bad = _clean(cls, values)
        found.extend(bad)
        params = cls(**clean)
        collected: list[SelectionConfigError] = []
        object.__setattr__(params, "_collected", collected)  # a frozen dataclass: not one of its fields
        try:
            params.check()
        except SelectionConfigError as exc:  # a check that raises by itself (a plugin's own)
            collected.extend(exc.problems)
        finally:
            object.__delattr__(params, "_collected")
        said = {p.field for p in found}
        return found + [p for p in collected if p.field not in said]

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Name, default and help of every field: what a form or a CLI shows."""
        return [
            {"name": f.name, "default": f.default, "help": f.metadata.get("help", ""),
             "kind": field_kind(f.type), "range": f.metadata.get("range")}
            for f in dataclasses.fields(cls)
        ]


def _clean(cls: type[MethodParams], values: dict[str, Any]) -> tuple[dict[str, Any], list[SelectionConfigError]]:
    """The known, well-typed values in range, and a problem for each other known value."""
    clean: dict[str, Any] = {}
    bad: list[SelectionConfigError] = []
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, problem = _checked(values[f.name], field_kind(f.type), f.metadata.get("range"))
        if problem:
            bad.append(SelectionConfigError(f"{cls.method}.{f.name}", problem))
        else:
            clean[f.name] = value
    return clean, bad


def _checked(value: Any, kind: str, bounds: Bounds | None) -> tuple[Any, str]:
    if kind in ("int", "float"):
        return check_number(value, kind, bounds)
    if kind == "bool":
        return (value, "") if isinstance(value, bool) else (value, f"must be true or false, got {shown(value)}")
    if kind == "str":
        return (value, "") if isinstance(value, str) else (value, f"must be text, got {shown(value)}")
    return value, ""
