"""What each method's dashboard panel draws, declared by the method itself.

A selector lists its panels (``Selector.panels``); the run page renders every panel of the
run's methods with one of a few generic views, so a new method's charts need no frontend
code. Series name step metrics as the selector logs them (``hive/stage1_kept``) or
decision reasons (``lze.replayed``, counted per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Style = Literal["line", "bar"]
Axis = Literal["left", "right"]
# Renderers the run page knows: "steps" plots series against the step; the others are
# drawn from their own endpoint (HORA's allocation heat map, LZE's energy histogram).
View = Literal["steps", "hora_allocation", "lze_energy"]
Unit = Literal["count", "share", "value", "correlation"]


@dataclass(frozen=True)
class Series:
    label: str  # the legend, in words
    metric: str = ""  # a step metric the selector logs, e.g. "hive/stage1_kept"
    decision: str = ""  # or a decision reason, counted per step, e.g. "lze.replayed"
    per: str = ""  # divide by this step-summary column (e.g. "rollouts_trained"): a share
    style: Style = "line"
    axis: Axis = "left"

    def __post_init__(self) -> None:
        if bool(self.metric) == bool(self.decision):
            raise ValueError(f"series {self.label!r}: name exactly one of metric and decision")


@dataclass(frozen=True)
class Panel:
    key: str  # unique within the method; the chart's element id is chart-<method>-<key>
    title: str
    series: tuple[Series, ...] = ()
    view: View = "steps"
    unit: Unit = "count"  # the left axis
    right_unit: Unit = "share"  # the right axis, when a series uses it
    wide: bool = False

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(s.metric for s in self.series if s.metric)
