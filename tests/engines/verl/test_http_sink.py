"""The HTTP sink against the real control plane: a live Django server, a real run, its token,
real step records from the selection pipeline; the server down and back; cancel obeyed."""

from __future__ import annotations

import socket

import pytest

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_cancel
from controlplane.telemetry.models import PromptObservation, SelectionDecision, StepSummary
from controlplane.telemetry.services import token_issue
from tests.selection.simulated import Simulation
from workers.engines.verl.http_sink import CURSOR, REJECTED, SPOOL, STAGED, HttpSink
from workers.engines.verl.report import train_summary
from workers.record import RECORD_VERSION, Control, StepRecord
from workers.record import RunStatus as EngineStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(claimed_verl_run):
    return claimed_verl_run


@pytest.fixture
def token(run) -> str:
    return token_issue(run_id=run.id)


@pytest.fixture
def records() -> list[StepRecord]:
    """Step records as a verl engine builds them: the pipeline over Bernoulli outcomes, and
    train stats read from verl's metric names (NaN where verl reported nothing numeric)."""
    sim = Simulation({"greso": {}}, n_prompts=16, batch_size=4, group_size=4, seed=3)
    metrics = {"actor/pg_loss": 0.25, "actor/grad_norm": float("nan"), "critic/score/mean": 0.5}
    return [StepRecord.from_result(result, train=train_summary(metrics, 10.0 * (i + 1)))
            for i, (result, _) in enumerate(sim.run(4))]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def sink_for(url: str, run, token: str, tmp_path, **kwargs) -> HttpSink:
    kwargs.setdefault("backoff_s", 0.01)
    kwargs.setdefault("request_timeout_s", 5.0)
    return HttpSink(base_url=url, run_id=run.id, token=token, run_dir=tmp_path, **kwargs)


def stored_steps(run) -> list[int]:
    return list(StepSummary.objects.filter(run=run).order_by("step").values_list("step", flat=True))


def test_each_step_posted_is_stored_with_its_observations_and_decisions(live_server, run, token, records, tmp_path):
    sink = sink_for(live_server.url, run, token, tmp_path)
    sink.run_started(config={"engine": "verl"}, model_parameters=10, dataset_size=16, resumed_from_step=None)
    sink.heartbeat(phase="warmup", detail="loading the model")
    answers = [sink.step(record) for record in records]
    sink.checkpoint_saved(step=3, path="/ckpt/global_step_4")
    sink.run_finished(status=EngineStatus.SUCCEEDED, reason="trained 4 steps")

    assert answers == [Control.CONTINUE] * 4
    assert stored_steps(run) == [0, 1, 2, 3]
    for record in records:
        assert PromptObservation.objects.filter(run=run, step=record.step).count() == len(record.observations)
        assert SelectionDecision.objects.filter(run=run, step=record.step).count() == len(record.decisions)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.last_checkpoint_step == 3
    assert not sink.pending and (tmp_path / CURSOR).read_text() == "8"
    stored = StepSummary.objects.get(run=run, step=0)
    assert stored.loss == 0.25 and stored.train["grad_norm"] is None  # verl's NaN: null, as in process


def test_events_spooled_while_the_server_is_down_arrive_in_order_once_it_is_back(
        live_server, run, token, records, tmp_path):
    sink = sink_for(closed_port_url(), run, token, tmp_path, step_deadline_s=0.05)
    assert sink.step(records[0]) == Control.CONTINUE  # unreachable: training goes on
    assert sink.step(records[1]) == Control.CONTINUE
    assert len(sink.pending) == 2 and stored_steps(run) == []

    sink.url = f"{live_server.url}/api/ingest/runs/{run.id}/steps/"  # the server is back
    assert sink.step(records[2]) == Control.CONTINUE
    assert stored_steps(run) == [0, 1, 2] and not sink.pending
    assert StepSummary.objects.filter(run=run).count() == 3  # one row per step, none doubled


def test_a_restarted_engine_delivers_what_its_predecessor_left_in_the_spool(
        live_server, run, token, records, tmp_path):
    down = sink_for(closed_port_url(), run, token, tmp_path, step_deadline_s=0.0)
    for record in records[:3]:
        down.step(record)
    assert (tmp_path / SPOOL).read_text().count("\n") == 3 and stored_steps(run) == []

    again = sink_for(live_server.url, run, token, tmp_path)
    assert len(again.pending) == 3
    assert again.flush() is True
    assert stored_steps(run) == [0, 1, 2]
    # A crash after the server's answer but before the cursor moved resends the last event:
    # the server replaces that step, it does not double it.
    (tmp_path / CURSOR).write_text("2")
    replay = sink_for(live_server.url, run, token, tmp_path)
    assert len(replay.pending) == 1 and replay.flush() is True
    assert StepSummary.objects.filter(run=run).count() == 3
    assert PromptObservation.objects.filter(run=run, step=2).count() == len(records[2].observations)


def test_the_sink_keeps_retrying_within_its_deadline_and_returns_the_servers_answer(
        live_server, run, token, records, tmp_path):
    naps: list[float] = []

    def sleep(seconds: float) -> None:  # the control plane comes back during the second nap
        naps.append(seconds)
        if len(naps) == 2:
            sink.url = f"{live_server.url}/api/ingest/runs/{run.id}/steps/"

    sink = sink_for(closed_port_url(), run, token, tmp_path, step_deadline_s=60.0, sleep=sleep)
    run_cancel(run=Run.objects.get(pk=run.id))
    assert sink.step(records[0]) == Control.CANCEL
    assert naps == [0.01, 0.02]  # exponential backoff
    assert stored_steps(run) == [0]


def test_a_cancel_answer_is_obeyed_and_stays(live_server, run, token, records, tmp_path):
    sink = sink_for(live_server.url, run, token, tmp_path)
    assert sink.step(records[0]) == Control.CONTINUE
    run_cancel(run=Run.objects.get(pk=run.id))
    assert sink.step(records[1]) == Control.CANCEL
    sink.run_finished(status=EngineStatus.CANCELLED, reason="cancelled at step 1")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    # The token died with the run: a late step is not lost silently, and the answer stays cancel.
    assert sink.step(records[2]) == Control.CANCEL
    assert len(sink.pending) == 1 and stored_steps(run) == [0, 1]


def test_a_record_the_server_refuses_is_set_aside_and_the_rest_still_goes(
        live_server, run, token, records, tmp_path):
    class FromANewerEngine:  # a record of a version this control plane cannot read
        step = 0

        def to_wire(self) -> dict:
            return {**records[0].to_wire(), "version": RECORD_VERSION + 1}

    sink = sink_for(live_server.url, run, token, tmp_path)
    assert sink.step(FromANewerEngine()) == Control.CONTINUE
    assert sink.step(records[1]) == Control.CONTINUE
    assert stored_steps(run) == [1]
    assert f"version {RECORD_VERSION + 1} is not readable here" in (tmp_path / REJECTED).read_text()


@pytest.mark.django_db(transaction=True)
def test_a_sink_of_a_replaced_attempt_is_refused_and_the_current_one_is_stored(live_server, run, token, records,
                                                                               tmp_path):
    from controlplane.runs.models import Run

    Run.objects.filter(pk=run.pk).update(attempts_count=2)  # the reconciler restarted the run elsewhere
    zombie = sink_for(live_server.url, run, token, tmp_path / "zombie", attempt=1)
    assert zombie.step(records[0]) == Control.CANCEL  # told to stop: the run goes on as attempt 2
    assert stored_steps(run) == []
    assert (tmp_path / "zombie" / REJECTED).read_text().count("replaced by attempt 2") == 1
    current = sink_for(live_server.url, run, token, tmp_path / "current", attempt=2)
    assert current.step(records[0]) == Control.CONTINUE
    assert stored_steps(run) == [records[0].step]


def test_a_step_closed_but_not_reported_is_reported_by_the_next_job(live_server, run, token, records, tmp_path):
    """verl checkpoints a step between closing it and reporting it: a job that dies there
    resumes after the step. The staged record survives it and the next job reports it."""
    dying = sink_for(live_server.url, run, token, tmp_path)
    dying.step(records[0])
    dying.stage(records[1])  # closed; the job dies before on_step_end reports it
    assert stored_steps(run) == [0]
    nothing_staged = sink_for(live_server.url, run, token, tmp_path / "elsewhere")
    assert nothing_staged.report_staged() is None
    resumed = sink_for(live_server.url, run, token, tmp_path)
    assert resumed.report_staged() == 1
    assert stored_steps(run) == [0, 1] and resumed.report_staged() is None  # once
    resumed.stage(records[2])
    assert resumed.step(records[2]) == Control.CONTINUE  # reported normally: nothing left staged
    assert not (tmp_path / STAGED).exists()
    assert stored_steps(run) == [0, 1, 2]


# -- transient failures: retried, never set aside ---------------------------------------------------
def test_a_database_that_fails_for_a_moment_is_retried_and_the_step_lands_once(live_server, run, token, records,
                                                                                tmp_path):
    """The server's database session is ended (pg_terminate_backend) while the step waits on
    a lock: the server answers 503 + Retry-After, the sink waits and sends the step again, and
    the step is stored once with all its rows; nothing goes to the rejected file."""
    import threading
    import time

    import psycopg
    from django.db import connection

    from tests.conftest import database_url_of

    if connection.vendor != "postgresql":
        pytest.skip("needs Postgres")
    url = database_url_of(connection.settings_dict)
    stop = threading.Event()

    def end_the_waiting_session() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            while not stop.is_set():
                rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchall()
                if rows:
                    admin.execute("SELECT pg_terminate_backend(%s)", [rows[0][0]])
                    return
                time.sleep(0.05)

    naps: list[float] = []
    holder = psycopg.connect(url)
    holder.execute(f"LOCK TABLE {StepSummary._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    killer = threading.Thread(target=end_the_waiting_session)
    killer.start()

    def sleep(seconds: float) -> None:  # the lock goes once the first try has failed
        naps.append(seconds)
        holder.rollback()

    sink = sink_for(live_server.url, run, token, tmp_path, step_deadline_s=60.0, sleep=sleep)
    try:
        answer = sink.step(records[0])
    finally:
        stop.set()
        killer.join()
        holder.close()
    # one failed try, answered 503 with Retry-After (the wait is the server's 2 s, not the sink's 0.01 s)
    assert naps and naps[0] >= 2, naps
    assert answer == Control.CONTINUE and not sink.pending
    assert stored_steps(run) == [0]
    assert PromptObservation.objects.filter(run=run, step=0).count() == len(records[0].observations)
    assert not (tmp_path / REJECTED).exists()


class Scripted:
    """A control plane stand-in that answers the statuses it is given, in turn (an HTTP server
    on loopback: the sink's own transport is what is tested)."""

    def __init__(self, statuses: list[tuple[int, dict]]) -> None:
        import http.server
        import json
        import threading

        self.statuses, self.bodies = list(statuses), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                code, headers = outer.statuses.pop(0) if outer.statuses else (200, {})
                answer = {"control": "continue"} if code == 200 else {"detail": f"scripted {code}"}
                if code == "attempt_replaced":  # what the control plane answers a replaced attempt
                    code, answer = 400, {"detail": "attempt 1 was replaced by attempt 2", "code": "attempt_replaced"}
                body = json.dumps(answer)
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 507, 408, 425, 429])
def test_every_5xx_and_408_425_429_is_retried_with_backoff_and_nothing_is_set_aside(tmp_path, records, status):
    server = Scripted([(status, {"Retry-After": "1"}), (status, {})])
    naps: list[float] = []
    try:
        sink = HttpSink(base_url=server.url, run_id=1, token="t", run_dir=tmp_path, step_deadline_s=60.0,
                        backoff_s=0.01, sleep=naps.append)
        assert sink.step(records[0]) == Control.CONTINUE
    finally:
        server.close()
    assert len(server.bodies) == 3 and server.bodies[0] == server.bodies[2]  # the same step, sent again
    assert naps == [1.0, 0.02]  # Retry-After first, then the sink's own doubling backoff
    assert not sink.pending and not (tmp_path / REJECTED).exists()


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, "attempt_replaced"])
def test_a_4xx_other_than_408_425_429_sets_the_event_aside_and_delivery_goes_on(tmp_path, records, status):
    server = Scripted([(status, {})])
    try:
        sink = HttpSink(base_url=server.url, run_id=1, token="t", run_dir=tmp_path, step_deadline_s=60.0,
                        backoff_s=0.01, sleep=lambda s: None)
        first = sink.step(records[0])
        second = sink.step(records[1])
    finally:
        server.close()
    assert len(server.bodies) == 2 and not sink.pending
    assert f'"status": {400 if status == "attempt_replaced" else status}' in (tmp_path / REJECTED).read_text()
    # a replaced attempt's engine is told to stop; any other refusal changes nothing
    expected = Control.CANCEL if status == "attempt_replaced" else Control.CONTINUE
    assert first == expected and second == expected


def test_a_step_goes_out_as_its_records_wire_form_and_the_spool_holds_the_text_that_was_sent(tmp_path, records):
    """A step's body is ``to_wire()`` as it is (JSON-ready, not walked again); an open structure
    (an evaluation, a config) still goes through ``wire_json``: numpy as Python, NaN as null."""
    import json

    import numpy as np

    server = Scripted([])
    try:
        sink = HttpSink(base_url=server.url, run_id=1, token="t", run_dir=tmp_path, attempt=2)
        sink.step(records[0])
        sink.evaluation({"step": 1, "k": np.int64(4), "pass_at_1": np.float64(0.5), "pass_at_k": float("nan"),
                         "prompts": 4})
    finally:
        server.close()
    assert server.bodies[0] == {"event": "step", **records[0].to_wire(), "attempt": 2}
    assert server.bodies[1] == {"event": "evaluation", "step": 1, "k": 4, "pass_at_1": 0.5, "pass_at_k": None,
                                "prompts": 4, "attempt": 2}
    spooled = [json.loads(line) for line in (tmp_path / SPOOL).read_text().splitlines()]
    assert [line["seq"] for line in spooled] == [0, 1]
    assert [line["body"] for line in spooled] == server.bodies
