"""The HTTP form of the telemetry sink, for engines outside the worker (verl on a Ray cluster).

Every event is first appended to a JSON-lines spool in the run's folder (fsynced), then
delivered in order to the control plane's ingestion endpoint
(``POST /api/ingest/runs/<id>/steps/``, ``Authorization: RunToken <key>``, docs/api.md).
A cursor file beside the spool holds how many spooled events the server has accepted, so
a restarted engine (or ``python -m workers.engines.verl.http_sink --flush DIR``) sends
exactly what is left.

Guarantees and choices:

- **Order.** Events leave in the order they were spooled; a later one is never sent
  before an earlier one was accepted.
- **Nothing lost.** An event is on disk before the first attempt; the cursor moves only
  after a 2xx answer.
- **Nothing doubled.** The cursor moves after each accepted event. A crash between the
  server's answer and the cursor write resends that one event, which the server takes
  idempotently (steps and evaluations replace per (run, step); checkpoints, heartbeats and
  run_started are plain updates).
- **Control plane down.** ``step()`` keeps retrying with exponential backoff for up to
  ``step_deadline_s`` (default 120 s). If the server is still unreachable it answers
  ``continue`` and training goes on; the backlog stays spooled and goes first on the next
  event. Training is never blocked for longer than that deadline per step: a GPU job
  that waits on a dashboard costs more than one that reports late. Other events make one
  attempt (``event_deadline_s``, default 0); ``run_finished`` retries for
  ``final_deadline_s`` (default 300 s), being the last chance to deliver the backlog.
- **A step closed but not reported.** verl saves a step's checkpoint after the step closes
  and before the trainer reports it (the record waits for the checkpoint's seconds). The
  closed step's record is staged on disk first (``stage``); ``step`` spools the final one
  and drops the staged file. A job that dies in between resumes after that step, so nothing
  would report it: the next job's ``report_staged`` delivers it instead (a step replayed
  later replaces it, as any replayed step does).
- **Control answers.** ``cancel`` and ``stop_budget`` are sticky: once any delivered step or
  heartbeat (also one from the backlog) is answered so, every later ``step()`` and
  ``heartbeat()`` answers the same.
- **Refusals.** A 4xx other than 408, 425 and 429 cannot succeed on retry: a 400 (a
  malformed record, or a run that takes no more steps) moves the event to
  ``telemetry-rejected.jsonl`` with the server's reason and delivery goes on. A 400 whose
  ``code`` is ``attempt_replaced`` means this attempt was replaced (the run goes on
  elsewhere): the event is set aside the same way and every later answer is ``cancel``.
  A 401 or 403 means the run token is revoked (the run ended on the control plane) or
  wrong: the events are kept in the spool, and ``step()`` answers ``cancel`` (the run is
  over for the control plane; training on wastes devices).
- **Transient failures.** Every 5xx (503 when the control plane's database failed for a
  moment), 408, 425, 429, connection errors and timeouts are retried with exponential backoff,
  waiting at least the server's ``Retry-After``; the event stays spooled until it is accepted,
  never dropped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.record import MAX_DETAIL, MAX_REASON, Control, RunStatus, StepRecord, wire_json

log = logging.getLogger(__name__)

SPOOL = "telemetry-spool.jsonl"
CURSOR = "telemetry-spool.cursor"
REJECTED = "telemetry-rejected.jsonl"
STAGED = "telemetry-staged-step.json"  # a closed step's record, until step() spools it
RETRIABLE_4XX = {408, 425, 429}  # timeout, too early, too many requests: worth retrying, like every 5xx
REPLACED = "attempt_replaced"  # the code of the 400 that says this attempt was replaced: stop


def retriable(status: int) -> bool:
    return status >= 500 or status in RETRIABLE_4XX


class Unreachable(Exception):
    """The control plane did not answer, or answered with a status worth retrying
    (``retry_after``: the seconds its Retry-After header asked for, 0 without one)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (HTTP dates are not used by the control plane: 0 for them)."""
    try:
        return max(float(value), 0.0) if value else 0.0
    except ValueError:
        return 0.0


class Refused(Exception):
    """The control plane refused the event for good (4xx other than 408/425/429)."""

    def __init__(self, status: int, detail: str, code: str = "") -> None:
        self.status, self.detail, self.code = status, detail, code
        super().__init__(f"HTTP {status}: {detail}")


COMPRESS_OVER_BYTES = 16 * 1024  # a body this large goes gzip-compressed (a step of 1,024 prompts is ~400 KB)


def event_json(body: dict[str, Any]) -> str:
    """An event as compact JSON text (no NaN): what the spool holds and the request carries."""
    return json.dumps(body, allow_nan=False, separators=(",", ":"))


def encode_event(body: dict[str, Any] | str) -> tuple[bytes, dict[str, str]]:
    """An event's HTTP body and its content headers: compact JSON (a step record's rows are
    columns, wire version 3; ``body`` may be that text already, ``event_json``'s), gzip at level
    1 when large: about a tenth of the bytes, for far less time than a slow link spends on the rest."""
    data = (body if isinstance(body, str) else event_json(body)).encode()
    headers = {"Content-Type": "application/json"}
    if len(data) > COMPRESS_OVER_BYTES:
        data = gzip.compress(data, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return data, headers


def _post_json(url: str, token: str, body: dict[str, Any] | str, timeout: float) -> dict[str, Any]:
    data, headers = encode_event(body)
    request = urllib.request.Request(url, data=data, method="POST", headers={
        **headers, "Authorization": f"RunToken {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        code = ""
        try:
            answer = json.loads(exc.read() or b"{}")
            detail, code = answer.get("detail", exc.reason), str(answer.get("code", ""))
        except (ValueError, AttributeError):
            detail = str(exc.reason)
        if retriable(exc.code):
            raise Unreachable(f"HTTP {exc.code}: {detail}", _retry_after(exc.headers.get("Retry-After"))) from exc
        raise Refused(exc.code, str(detail), code) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise Unreachable(str(exc)) from exc


class HttpSink:
    """A TelemetrySink that posts to the control plane, spooled on disk and retried in order.

    ``base_url`` is the control plane's root (``http://host:8000``); ``run_dir`` the run's
    folder on the machine that runs the trainer (the spool lives there).
    """

    def __init__(self, *, base_url: str, run_id: int, token: str, run_dir: str | Path,
                 step_deadline_s: float = 120.0, event_deadline_s: float = 0.0,
                 final_deadline_s: float = 300.0, request_timeout_s: float = 30.0,
                 backoff_s: float = 0.5, backoff_max_s: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, attempt: int | None = None) -> None:
        self.url = f"{base_url.rstrip('/')}/api/ingest/runs/{int(run_id)}/steps/"
        self.token = token
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spool_path, self.cursor_path = self.dir / SPOOL, self.dir / CURSOR
        self.rejected_path = self.dir / REJECTED
        self.staged_path = self.dir / STAGED
        self.step_deadline_s, self.event_deadline_s = step_deadline_s, event_deadline_s
        self.final_deadline_s, self.request_timeout_s = final_deadline_s, request_timeout_s
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.sleep, self.clock = sleep, clock
        self.attempt = attempt  # sent with every event: the server fences off replaced attempts
        self.sticky: Control | None = None  # cancel / stop_budget once seen
        self.answers: dict[int, Control] = {}  # step -> control answer of the server
        self.heartbeat_answer = Control.CONTINUE  # the server's answer to the last heartbeat delivered
        self._seq, self.pending = self._load()

    # -- the spool ----------------------------------------------------------------------------
    def _load(self) -> tuple[int, deque[tuple[int, dict[str, Any], str]]]:
        sent = int(self.cursor_path.read_text().strip() or 0) if self.cursor_path.exists() else 0
        pending: deque[tuple[int, dict[str, Any], str]] = deque()
        seq = 0
        if self.spool_path.exists():
            for line in self.spool_path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    log.warning("ignoring a torn line at the end of %s", self.spool_path)
                    continue
                seq = max(seq, int(item["seq"]) + 1)
                if item["seq"] >= sent:
                    pending.append((int(item["seq"]), item["body"], event_json(item["body"])))
        return seq, pending

    def _spool(self, body: dict[str, Any]) -> int:
        """Append the event to the spool (fsynced) and the queue; its JSON text is made once, for
        both the spool line and the request."""
        seq, self._seq = self._seq, self._seq + 1
        text = event_json(body)
        with self.spool_path.open("a", encoding="utf-8") as handle:
            handle.write(f'{{"seq":{seq},"body":{text}}}\n')
            handle.flush()
            os.fsync(handle.fileno())
        self.pending.append((seq, body, text))
        return seq

    def _advance(self, seq: int) -> None:
        partial = self.cursor_path.with_suffix(".partial")
        partial.write_text(str(seq + 1))
        partial.replace(self.cursor_path)

    def _reject(self, seq: int, body: dict[str, Any], refused: Refused) -> None:
        line = json.dumps({"seq": seq, "status": refused.status, "detail": refused.detail, "body": body})
        with self.rejected_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        log.error("control plane refused %s event (seq %d): %s", body.get("event", "step"), seq, refused)

    # -- delivery -----------------------------------------------------------------------------
    def flush(self, deadline_s: float = 0.0) -> bool:
        """Deliver the backlog in order, retrying for up to ``deadline_s``; True when empty.

        Stops early (False) when the token is refused (401/403): nothing more can go.
        """
        start, delay = self.clock(), self.backoff_s
        while self.pending:
            seq, body, text = self.pending[0]
            try:
                answer = _post_json(self.url, self.token, text, self.request_timeout_s)
            except Unreachable as exc:
                left = deadline_s - (self.clock() - start)
                if left <= 0:
                    log.warning("control plane unreachable (%s); %d events spooled", exc, len(self.pending))
                    return False
                self.sleep(min(max(delay, exc.retry_after), left))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            except Refused as exc:
                if exc.status in (401, 403):
                    log.error("run token refused (%s): the run is over on the control plane", exc)
                    self.sticky = Control.CANCEL
                    return False
                self._reject(seq, body, exc)
                if exc.code == REPLACED:
                    log.error("this attempt was replaced (%s): stopping", exc)
                    self.sticky = Control.CANCEL
                answer = {}
            self.pending.popleft()
            self._advance(seq)
            delay = self.backoff_s
            event = body.get("event", "step")
            if event in ("step", "heartbeat") and "control" in answer:
                control = Control(answer["control"])
                if event == "step":
                    self.answers[int(body["step"])] = control
                else:
                    self.heartbeat_answer = control
                if control is not Control.CONTINUE and self.sticky is None:
                    self.sticky = control
        return True

    def _send(self, body: dict[str, Any], deadline_s: float, json_ready: bool = False) -> None:
        """Spool the event, then deliver the backlog. An open structure (a config, an evaluation)
        goes through ``wire_json`` first; a step record's ``to_wire`` is JSON-ready already
        (``json_ready``: walking its columns value by value cost 12 ms a step of 3,072 rows)."""
        if self.attempt is not None:
            body = {**body, "attempt": self.attempt}
        self._spool(body if json_ready else wire_json(body))
        self.flush(deadline_s)

    # -- the TelemetrySink protocol -----------------------------------------------------------
    def run_started(self, *, config: dict[str, Any], model_parameters: int, dataset_size: int,
                    resumed_from_step: int | None) -> None:
        self._send({"event": "run_started", "config": config, "model_parameters": model_parameters,
                    "dataset_size": dataset_size, "resumed_from_step": resumed_from_step},
                   self.event_deadline_s)

    def stage(self, record: StepRecord) -> None:
        """Keep a closed step's record on disk until ``step`` reports it (atomic, fsynced)."""
        partial = self.staged_path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(record.to_wire(), allow_nan=False))
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(self.staged_path)

    def report_staged(self) -> int | None:
        """Report the record a dead job staged and never reported; its step, or None."""
        if not self.staged_path.exists():
            return None
        record = StepRecord.from_wire(json.loads(self.staged_path.read_text(encoding="utf-8")))
        self.step(record)
        log.warning("step %d was closed but not reported by the job before (it stopped in between): "
                    "reported now", record.step)
        return record.step

    def step(self, record: StepRecord) -> Control:
        self._send({"event": "step", **record.to_wire()}, self.step_deadline_s, json_ready=True)
        self.staged_path.unlink(missing_ok=True)  # spooled: on disk for good
        if self.sticky is not None:
            return self.sticky
        return self.answers.get(record.step, Control.CONTINUE)

    def evaluation(self, record: dict[str, Any]) -> None:
        self._send({"event": "evaluation", **record}, self.event_deadline_s)

    def checkpoint_saved(self, *, step: int, path: str) -> None:
        self._send({"event": "checkpoint", "step": step, "path": path}, self.event_deadline_s)

    def heartbeat(self, *, phase: str, detail: str, device_seconds: float | None = None,
                  warmup_step: int | None = None, warmup_steps: int | None = None) -> Control:
        """Alive between steps; ``device_seconds`` (the warm-up's since the last one) is booked,
        ``warmup_step`` of ``warmup_steps`` is the warm-up's progress. Answers the control signal
        (sticky cancel or stop_budget), ``continue`` when unreachable."""
        body: dict[str, Any] = {"event": "heartbeat", "phase": phase, "detail": detail[:MAX_DETAIL]}
        optional = {"device_seconds": device_seconds, "warmup_step": warmup_step, "warmup_steps": warmup_steps}
        body.update({name: value for name, value in optional.items() if value is not None})
        self._send(body, self.event_deadline_s)
        return self.sticky or self.heartbeat_answer

    def run_finished(self, *, status: RunStatus, reason: str) -> None:
        self._send({"event": "run_finished", "status": str(status), "reason": reason[:MAX_REASON]},
                   self.final_deadline_s)


def main(argv: list[str] | None = None) -> int:
    """Deliver what a finished or crashed engine left in its spool."""
    parser = argparse.ArgumentParser(prog="python -m workers.engines.verl.http_sink")
    parser.add_argument("--flush", required=True, metavar="RUN_DIR", help="the run folder holding the spool")
    parser.add_argument("--url", required=True, help="the control plane's root URL")
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--token", default=os.environ.get("EDGEPLANE_RUN_TOKEN", ""),
                        help="run token (default: $EDGEPLANE_RUN_TOKEN)")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds to keep retrying")
    args = parser.parse_args(argv)
    sink = HttpSink(base_url=args.url, run_id=args.run_id, token=args.token, run_dir=args.flush)
    done = sink.flush(args.deadline)
    print(f"{'delivered' if done else 'still spooled'}: {len(sink.pending)} events left")
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
