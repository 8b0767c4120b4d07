"""Stopping the processes a test started (servers, workers) in their own session."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to the process's group (it was started with ``start_new_session=True``), then
    SIGKILL if it has not ended within ``grace_s``; returns once it has ended."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
