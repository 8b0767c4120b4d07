"""The one protocol through which an engine talks to the outside world.

An engine calls the sink once when the run starts, once per finished step with one
``StepRecord`` (workers.record: summary, per-prompt observations, decisions), once per evaluation, once per
checkpoint, and once at the end; between steps (the warm-up) it sends heartbeats. ``step``
and ``heartbeat`` answer with a control signal that the engine obeys at the step boundary
(or at the warm-up's next progress call). The control plane implements the same protocol
(in-process for the local engine, over HTTP for remote ones).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from workers.record import Control, RunStatus, StepRecord, wire_json


class TelemetrySink(Protocol):
    def run_started(self, *, config: dict[str, Any], model_parameters: int, dataset_size: int,
                    resumed_from_step: int | None) -> None: ...

    def step(self, record: StepRecord) -> Control: ...

    def evaluation(self, record: dict[str, Any]) -> None: ...

    def checkpoint_saved(self, *, step: int, path: str) -> None: ...

    def heartbeat(self, *, phase: str, detail: str, device_seconds: float | None = None,
                  warmup_step: int | None = None, warmup_steps: int | None = None) -> Control:
        """Alive between steps (e.g. during the warm-up): the control plane must not think it
        lost. ``device_seconds``: what the warm-up (phase ``warmup``) spent since the last
        heartbeat, booked to the run's usage; ``warmup_step`` of ``warmup_steps``: how far the
        warm-up is (both or neither). Answers like ``step``: the engine stops its warm-up on
        ``cancel`` or ``stop_budget``."""

    def run_finished(self, *, status: RunStatus, reason: str) -> None: ...


class JsonlSink:
    """Writes every event as one JSON line to ``DIR/events.jsonl``.

    On resume, events of steps after the checkpoint are dropped first: those steps run
    again, and a replayed step must replace its record, never duplicate it.
    """

    def __init__(self, out_dir: str | Path, control: Control = Control.CONTINUE) -> None:
        self.path = Path(out_dir) / "events.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.control = control

    def _write(self, event: str, payload: dict[str, Any]) -> None:
        line = json.dumps({"event": event, **wire_json(payload)}, allow_nan=False)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop step, evaluation and checkpoint events after ``step`` (before a resume)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event.get("step", -1) > step or event["event"] == "run_finished":
                continue
            kept.append(line)
        partial = self.path.with_suffix(".partial")
        partial.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        partial.replace(self.path)

    def run_started(self, *, config: dict[str, Any], model_parameters: int, dataset_size: int,
                    resumed_from_step: int | None) -> None:
        self._write("run_started", {"config": config, "model_parameters": model_parameters,
                                    "dataset_size": dataset_size, "resumed_from_step": resumed_from_step})

    def step(self, record: StepRecord) -> Control:
        self._write("step", record.to_wire(version=2))  # a log people read: one object per row
        return self.control

    def evaluation(self, record: dict[str, Any]) -> None:
        self._write("evaluation", record)

    def checkpoint_saved(self, *, step: int, path: str) -> None:
        self._write("checkpoint", {"step": step, "path": path})

    def heartbeat(self, *, phase: str, detail: str, device_seconds: float | None = None,
                  warmup_step: int | None = None, warmup_steps: int | None = None) -> Control:
        return Control.CONTINUE  # a file needs no proof of life and asks nothing to stop

    def run_finished(self, *, status: RunStatus, reason: str) -> None:
        self._write("run_finished", {"status": str(status), "reason": reason})


class TeeSink:
    """Sends every event to several sinks; the first one's control answer counts."""

    def __init__(self, primary: TelemetrySink, *others: TelemetrySink) -> None:
        self.sinks = (primary, *others)

    def run_started(self, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.run_started(**kwargs)

    def step(self, record: StepRecord) -> Control:
        answer = self.sinks[0].step(record)
        for sink in self.sinks[1:]:
            sink.step(record)
        return answer

    def evaluation(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.evaluation(record)

    def checkpoint_saved(self, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.checkpoint_saved(**kwargs)

    def heartbeat(self, **kwargs: Any) -> Control:
        answer = self.sinks[0].heartbeat(**kwargs)
        for sink in self.sinks[1:]:
            sink.heartbeat(**kwargs)
        return answer

    def run_finished(self, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.run_finished(**kwargs)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
