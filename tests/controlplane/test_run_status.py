"""The final status words have one home, the engines' enum; the control plane adds only the
words no engine says (queued, starting, running, lost)."""

from controlplane.runs.models import ACTIVE, FINISHED, RunStatus
from workers.record import RunStatus as EngineRunStatus


def test_every_status_an_engine_reports_is_a_finished_run_status():
    assert [status.value for status in FINISHED] == [status.value for status in EngineRunStatus]
    assert all(RunStatus(status) in FINISHED for status in EngineRunStatus)


def test_the_control_plane_alone_adds_the_waiting_running_and_lost_words():
    own = {status.value for status in RunStatus} - {status.value for status in EngineRunStatus}
    assert own == {"queued", "starting", "running", "lost"}
    assert not set(ACTIVE) & set(FINISHED)
