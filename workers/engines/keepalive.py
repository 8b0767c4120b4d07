"""Proof of life from a background thread, for engines that report from outside the control
plane (the verl job, through the HTTP sink).

The control plane judges a run lost once its heartbeat is older than
``EDGEPLANE_HEARTBEAT_STALE_SECONDS``; a step, evaluation or checkpoint can take longer than
that. ``Keepalive`` calls ``sink.heartbeat`` every quarter of that threshold (the job's
environment carries it; 30 s when absent) while the thread that started it lives, so a slow
phase is never taken for a dead job, and a dead or killed job still goes stale.

A sink is not thread-safe (the HTTP sink's spool is one ordered file and deque):
``SerialisedSink`` lets one call in at a time, the trainer's and the keepalive's alike.
No Django here: engines run standalone.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Self

log = logging.getLogger(__name__)

ENV_STALE = "EDGEPLANE_HEARTBEAT_STALE_SECONDS"
DEFAULT_EVERY_S = 30.0


def keepalive_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """A quarter of the control plane's stale threshold (``EDGEPLANE_HEARTBEAT_STALE_SECONDS``)."""
    raw = environ.get(ENV_STALE, "").strip()
    try:
        stale = float(raw) if raw else 4 * DEFAULT_EVERY_S
    except ValueError:
        log.warning("%s=%r is not a number; heartbeats every %.0f s", ENV_STALE, raw, DEFAULT_EVERY_S)
        stale = 4 * DEFAULT_EVERY_S
    return max(0.25, stale / 4) if stale > 0 else DEFAULT_EVERY_S


class SerialisedSink:
    """The sink's methods, one call at a time; its attributes read through."""

    def __init__(self, sink: Any) -> None:
        object.__setattr__(self, "_sink", sink)
        object.__setattr__(self, "_lock", threading.RLock())

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._sink, name)
        if not callable(value):
            return value

        def serialised(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return serialised

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._sink, name, value)


class Keepalive:
    """``with Keepalive(sink):`` heartbeats from a daemon thread until the block ends."""

    def __init__(self, sink: Any, *, every_s: float | None = None, phase: str = "keepalive",
                 detail: str = "alive: training between reports") -> None:
        self.sink, self.phase, self.detail = sink, phase, detail
        self.every_s = keepalive_seconds() if every_s is None else every_s
        self.beats = 0
        self._stop = threading.Event()
        self._owner = threading.current_thread()
        self._thread = threading.Thread(target=self._run, name="edgeplane-keepalive", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s) and self._owner.is_alive():
            try:
                self.sink.heartbeat(phase=self.phase, detail=self.detail)
                self.beats += 1
            except Exception as exc:  # noqa: BLE001 - a missed beat must not end the job; the next one tries again
                log.warning("heartbeat not sent: %s", exc)
