"""The engines' keepalive: heartbeats from a thread while a slow phase holds the trainer, through
the real HTTP sink, one sink call at a time (its spool is ordered: two threads in it at once
would send an event twice or skip one)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.engines.keepalive import Keepalive, SerialisedSink, keepalive_seconds
from workers.engines.verl.http_sink import HttpSink


@pytest.fixture
def control_plane():
    """An ingestion endpoint that records every event it accepts, slowly (20 ms each)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(0.02)
            received.append(body)
            payload = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_a_slow_phase_is_covered_by_heartbeats_and_no_event_is_sent_twice(control_plane, tmp_path):
    url, received = control_plane
    sink = SerialisedSink(HttpSink(base_url=url, run_id=1, token="t", run_dir=tmp_path, attempt=2))
    with Keepalive(sink, every_s=0.05) as keepalive:
        for step in range(20):  # the trainer's own events, while the keepalive beats
            sink.evaluation({"step": step, "k": 1, "pass_at_1": 0.5, "pass_at_k": 0.5, "prompts": 1})
        time.sleep(0.6)  # a slow phase: nothing from the trainer
    assert keepalive.beats >= 5
    evaluations = [e["step"] for e in received if e["event"] == "evaluation"]
    assert evaluations == list(range(20))
    beats = [e for e in received if e["event"] == "heartbeat"]
    assert len(beats) == keepalive.beats and all(b["attempt"] == 2 for b in beats)
    assert not sink.pending  # every spooled event delivered once, in order
    count = len(received)
    time.sleep(0.2)
    assert len(received) == count, "the keepalive beat on after its block ended"


def test_heartbeats_stop_with_the_thread_that_started_them(tmp_path):
    beats: list[str] = []

    class Sink:
        def heartbeat(self, *, phase: str, detail: str) -> None:
            beats.append(phase)

    holder: dict[str, Keepalive] = {}

    def trainer() -> None:  # starts the keepalive and dies without leaving the block
        holder["k"] = Keepalive(Sink(), every_s=0.05).__enter__()

    thread = threading.Thread(target=trainer)
    thread.start()
    thread.join()
    time.sleep(0.3)
    assert len(beats) <= 1, "a keepalive outlived the thread it speaks for"


@pytest.mark.parametrize(("value", "every"), [("", 30.0), ("120", 30.0), ("2", 0.5), ("0.4", 0.25),
                                              ("zero", 30.0), ("0", 30.0)])
def test_the_beat_is_a_quarter_of_the_control_planes_stale_threshold(value, every):
    assert keepalive_seconds({"EDGEPLANE_HEARTBEAT_STALE_SECONDS": value}) == every
