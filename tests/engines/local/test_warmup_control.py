"""The warm-up is billed and obeys the control plane: each heartbeat carries the device-seconds
spent since the last one, and a cancel or an exhausted budget answered to a heartbeat stops the
warm-up at its next progress call; the run ends before its first step, nothing cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engines.local.conftest import TINY
from workers.engines.config import RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.telemetry import JsonlSink, read_events
from workers.record import Control, RunStatus

LONG = {**TINY, "warmup_steps": 400, "warmup_seed": 7}  # its own cache key: never warm already


class Answering(JsonlSink):
    """A file sink whose heartbeats the test answers: ``control`` from the ``after``-th on."""

    def __init__(self, out: Path, control: Control, after: int) -> None:
        super().__init__(out)
        self.answer, self.after = control, after
        self.beats: list[dict] = []

    def heartbeat(self, *, phase: str, detail: str, device_seconds: float | None = None,
                  warmup_step: int | None = None, warmup_steps: int | None = None) -> Control:
        self.beats.append({"phase": phase, "detail": detail, "device_seconds": device_seconds,
                           "warmup_step": warmup_step, "warmup_steps": warmup_steps})
        return self.answer if len(self.beats) >= self.after else Control.CONTINUE


@pytest.mark.parametrize(("control", "status", "why"), [
    (Control.CANCEL, RunStatus.CANCELLED, "cancelled on request during the warm-up"),
    (Control.STOP_BUDGET, RunStatus.BUDGET_STOPPED, "compute budget reached during the warm-up"),
])
def test_a_stop_answered_to_a_warmup_heartbeat_ends_the_run_before_its_first_step(tmp_path, control, status, why):
    sink = Answering(tmp_path / "run", control, after=2)
    var = tmp_path / "var"
    engine = LocalEngine(RunConfig.from_mapping(LONG), tmp_path / "run", sink, var_dir=var)
    assert engine.run() == status
    events = read_events(sink.path)
    assert [e["event"] for e in events] == ["run_finished"]  # no step, not even run_started
    assert events[-1]["status"] == str(status) and events[-1]["reason"].startswith(why)
    assert len(sink.beats) == 2  # stopped at the progress call that heard it
    assert all(b["phase"] == "warmup" and b["device_seconds"] > 0 for b in sink.beats)
    assert not list((var / "warmup").glob("*.pt"))  # a stopped warm-up is not cached


def test_a_whole_warmup_books_its_time_in_heartbeats_and_its_end(tmp_path):
    config = {**LONG, "warmup_steps": 150, "steps": 1}
    sink = Answering(tmp_path / "run", Control.CONTINUE, after=0)
    engine = LocalEngine(RunConfig.from_mapping(config), tmp_path / "run", sink, var_dir=tmp_path / "var")
    assert engine.run() == RunStatus.SUCCEEDED
    assert sink.beats[-1]["detail"].startswith("supervised warm-up done: 150 steps")
    # each heartbeat says how far the warm-up is: steps done, rising, of the total; the last one all of it
    done = [b["warmup_step"] for b in sink.beats]
    assert all(b["warmup_steps"] == 150 for b in sink.beats)
    assert done[0] == 1 and done == sorted(done) and done[-1] == 150 and len(set(done)) >= 2
    booked = sum(b["device_seconds"] for b in sink.beats)
    step = next(e for e in read_events(sink.path) if e["event"] == "step")
    # every second of the warm-up is booked once: the heartbeats add up to the warm-up's own clock
    assert booked >= step["summary"]["warmup"]["warmup_seconds"] > 0
    # a cached warm-up spends nothing and books nothing
    again = Answering(tmp_path / "again", Control.CONTINUE, after=0)
    LocalEngine(RunConfig.from_mapping(config), tmp_path / "again", again, var_dir=tmp_path / "var").run()
    assert again.beats == []
