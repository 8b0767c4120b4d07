"""Locust's side of the load test (bench/load_test.py starts it; not meant to run alone).

Two kinds of user against one Edgeplane server:

- ``RunEngine`` (one per run): posts its run's step records in order (0, 1, 2, ...) to
  ``POST /api/ingest/runs/<id>/steps/`` with ``Authorization: RunToken <key>``, the next one as
  soon as the previous one was answered with a 2xx (no wait), encoded as the verl HTTP sink
  encodes them. A step answered otherwise is sent again (as the sink does) and counted as a failure.
- ``DashboardViewer``: signs in through the login form (a session, CSRF), opens a run's page,
  then polls its chart endpoints with the cursor every 2 s as the browser's run page does
  (series and evaluations; when new steps came: actions, heat map and recent decisions).

The plan (runs, tokens, viewers' names and passwords) is read from the JSON file named by
EDGEPLANE_LOAD_PLAN; what happened (the steps each run got a 2xx for, their times, every
response time by kind, the failures) is written at the end to EDGEPLANE_LOAD_OUT.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.telemetry_ingest import step_record
from workers.record import wire_json

try:  # the sink's own encoding, once it has one (compact, compressed); else what _post_json sends
    from workers.engines.verl.http_sink import encode_event  # type: ignore[attr-defined]

    ENCODING = "workers.engines.verl.http_sink.encode_event"
except ImportError:
    encode_event = None
    ENCODING = "json.dumps(wire_json(body), allow_nan=False), Content-Type: application/json (http_sink._post_json)"

PLAN: dict[str, Any] = json.loads(Path(os.environ["EDGEPLANE_LOAD_PLAN"]).read_text())
OUT = Path(os.environ["EDGEPLANE_LOAD_OUT"])
POLL_S = float(PLAN.get("poll_seconds", 2.0))
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')

# What the run reports: run id -> [(step, unix time of its 2xx)], response times (ms) by kind.
accepted: dict[int, list[tuple[int, float]]] = {run["id"]: [] for run in PLAN["runs"]}
latencies: dict[str, list[float]] = {"ingest": [], "chart": [], "page": []}
failures: list[dict[str, Any]] = []
moments: dict[str, float] = {}
_free_runs = list(PLAN["runs"])
_free_viewers = list(PLAN["viewers"])


@functools.lru_cache(maxsize=256)
def encoded_step(step: int, attempt: int) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """Step ``step``'s body and headers as the HTTP sink sends them. Every run posts the same
    record for a step (bench/telemetry_ingest.py's), so it is built once per step, not per run:
    the load generator spends its CPU on requests, not on building records."""
    record = step_record(step, PLAN["prompts"], PLAN["decisions_per_prompt"])
    body = wire_json({"event": "step", **record.to_wire(), "attempt": attempt})  # HttpSink.step then _send
    if encode_event is not None:
        data, headers = encode_event(body)
        return data, tuple(headers.items())
    return json.dumps(body, allow_nan=False).encode(), (("Content-Type", "application/json"),)


@events.request.add_listener
def _timed(request_type, name, response_time, response_length, exception=None, **_: Any) -> None:
    kind = "ingest" if name.startswith("ingest") else "chart" if name.startswith("chart") else "page"
    latencies[kind].append(response_time)
    if exception is not None and len(failures) < 50:
        failures.append({"name": name, "error": str(exception)[:300], "at": time.time()})


@events.test_start.add_listener
def _started(**_: Any) -> None:
    moments["test_start"] = time.time()


@events.spawning_complete.add_listener
def _spawned(user_count: int, **_: Any) -> None:
    moments.setdefault("spawning_complete", time.time())


@events.test_stopping.add_listener
def _stopping(**_: Any) -> None:
    moments.setdefault("test_stopping", time.time())


@events.quitting.add_listener
def _write(**_: Any) -> None:
    OUT.write_text(
        json.dumps(
            {
                "encoding": ENCODING,
                "moments": moments,
                "failures": failures,
                "latencies_ms": latencies,
                "accepted": {str(run_id): steps for run_id, steps in accepted.items()},
                "bad_order": bad_order,
            }
        )
    )


bad_order: list[str] = []


class RunEngine(FastHttpUser):
    """One run's engine: its steps in order, each as soon as the previous one was stored."""

    fixed_count = len(PLAN["runs"])
    wait_time = constant(0)
    network_timeout = connection_timeout = 300.0

    def on_start(self) -> None:
        run = _free_runs.pop(0)
        self.run_id, self.token, self.attempt = run["id"], run["token"], run["attempt"]
        self.url = f"/api/ingest/runs/{self.run_id}/steps/"
        self.step = 0

    @task
    def post_step(self) -> None:
        data, headers = encoded_step(self.step, self.attempt)
        with self.client.post(
            self.url,
            data=data,
            headers={**dict(headers), "Authorization": f"RunToken {self.token}"},
            name="ingest step",
            catch_response=True,
        ) as answer:
            if 200 <= answer.status_code < 300:
                steps = accepted[self.run_id]
                if steps and steps[-1][0] != self.step - 1:
                    bad_order.append(f"run {self.run_id}: step {self.step} after {steps[-1][0]}")
                steps.append((self.step, time.time()))
                self.step += 1
                answer.success()
            else:
                answer.failure(f"HTTP {answer.status_code}: {(answer.text or '')[:200]}")
                time.sleep(0.5)  # gevent's sleep (monkey-patched): the sink backs off too


class DashboardViewer(FastHttpUser):
    """A signed-in browser on a run page: the chart endpoints, polled with their cursors."""

    fixed_count = len(PLAN["viewers"])
    wait_time = constant(POLL_S)
    network_timeout = connection_timeout = 120.0

    def on_start(self) -> None:
        viewer = _free_viewers.pop(0)
        self.run_id = viewer["run_id"]
        self.sign_in(viewer["username"], viewer["password"])
        base = f"/data/runs/{self.run_id}"
        self.urls = {name: f"{base}/{name}/" for name in ("series", "evaluations", "actions", "heatmap", "recent")}
        self.get_page(f"/runs/{self.run_id}/", "page run")
        # The first reads, at the chart's resolution (points), as run.js starts them; then cursors.
        self.after = {"series": -1, "evaluations": -1, "actions": -1, "heatmap": -1}
        self.ranked_through: int | None = None
        self.poll(first=True)

    def sign_in(self, username: str, password: str) -> None:
        page = self.get_page("/accounts/login/", "page login")
        match = CSRF.search(page or "")
        with self.client.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": match.group(1) if match else ""},
            headers={"Referer": f"{self.host}/accounts/login/"},
            name="page login POST",
            catch_response=True,
            allow_redirects=False,
        ) as answer:
            if answer.status_code != 302 or not any(c.name == "sessionid" for c in self.client.cookiejar):
                answer.failure(f"sign-in refused: HTTP {answer.status_code}")
                raise RuntimeError(f"{username} could not sign in (HTTP {answer.status_code})")

    def get_page(self, path: str, name: str) -> str | None:
        with self.client.get(path, name=name, catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}")
                return None
            return answer.text

    def get_json(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        with self.client.get(
            f"{self.urls[name]}?{query}" if query else self.urls[name],
            name=f"chart {name}",
            headers={"Accept": "application/json"},
            catch_response=True,
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}: {(answer.text or '')[:200]}")
                return None
            try:
                return answer.json()
            except ValueError as exc:
                answer.failure(f"not JSON: {exc}")
                return None

    def cursor(self, name: str, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        page = self.get_json(name, {"after": self.after[name], **(extra or {})})
        if page is not None and "next_after" in page:
            self.after[name] = page["next_after"]
        return page

    @task
    def poll(self, first: bool = False) -> None:
        points = {"points": 600} if first else {}
        before = self.after["series"]
        page = self.cursor("series", points)
        while page is not None and page.get("has_more"):  # the browser asks again at once
            page = self.cursor("series")
        self.cursor("evaluations")
        if first or self.after["series"] > before:  # new steps: the other charts ask now (run.js)
            self.cursor("actions", points)
            heat = self.cursor(
                "heatmap", {} if self.ranked_through is None else {"ranked_through": self.ranked_through}
            )
            if heat is not None and self.ranked_through is None:
                self.ranked_through = heat.get("ranked_through")
            self.get_json("recent", {})
