"""Supervising a submitted verl job: its state, the tail of its log, stopping it.

``launch.submit`` returns one of two handles:

- a Ray submission id (the attempt id): the job runs on a Ray cluster and is asked
  through the Jobs API (``JobSubmissionClient(address)``: status, logs, stop);
- ``pid:<n>``: a local process, started in a session of its own (its process group id is
  its pid), writing ``RUN_DIR/verl-<attempt id>.log``. Only the machine that started it can
  see it. Only its parent (the worker process that launched it) can collect its exit status,
  so ``popen_recording_exit`` has a thread of that process wait for it and write the status to
  ``RUN_DIR/verl-<attempt id>.exit``, where any process can read it.

Pure functions over a ``JobHandle``; nothing here knows Django. The control plane calls
them from its reconciler (controlplane/runs/verl_runs.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

LOCAL_PREFIX = "pid:"
TAIL_LINES = 40
TAIL_CHARS = 4000
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours its log lines


class JobState(StrEnum):
    """The Ray Jobs API's states; a local process maps onto them."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def ended(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    detail: str = ""  # "exit code 3", "killed by SIGTERM", Ray's message


@dataclass(frozen=True)
class JobHandle:
    """What ``submit`` returned, and what it takes to ask about it again."""

    job_id: str  # the Ray submission id, or pid:<n>
    ray_address: str = ""  # the Ray dashboard (http://head:8265); unused for a local process
    log_path: str = ""  # a local process's log (RUN_DIR/verl-<attempt id>.log)
    # Text in the command line or environment of the job's processes (the attempt id: verl's
    # experiment name and metrics path carry it) that proves a pid is still ours: pids are reused.
    marker: str = ""

    @property
    def local(self) -> bool:
        return self.job_id.startswith(LOCAL_PREFIX)

    @property
    def pid(self) -> int:
        return int(self.job_id.removeprefix(LOCAL_PREFIX))

    @property
    def exit_path(self) -> str:
        """Where a local process's exit status is recorded (beside its log)."""
        return str(Path(self.log_path).with_suffix(".exit")) if self.log_path else ""


class JobUnreachable(Exception):
    """The Ray cluster did not answer: the job's state is unknown, not ended."""


class JobNotFound(Exception):
    """The cluster answered that it has no job with this id."""


# -- Ray Jobs -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def ray_client(address: str) -> Any:
    """One JobSubmissionClient per address (making one costs a request to the dashboard)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise JobUnreachable("the Ray Jobs client is not installed here: install the verl extra "
                             "(pip install -e '.[verl]')") from exc
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, or Ray's RuntimeError naming the address
        raise JobUnreachable(f"the Ray dashboard at {address} did not answer: {exc}") from exc


def _ray_call(handle: JobHandle, method: str, *args: Any) -> Any:
    if not handle.ray_address:
        raise JobUnreachable(f"job {handle.job_id} is a Ray job, but no Ray address is set (EDGEPLANE_RAY_ADDRESS)")
    client = ray_client(handle.ray_address)
    try:
        return getattr(client, method)(*args)
    except Exception as exc:
        text = str(exc)
        if "does not exist" in text or "404" in text:
            raise JobNotFound(f"Ray at {handle.ray_address} has no job {handle.job_id}") from exc
        raise JobUnreachable(f"Ray at {handle.ray_address} did not answer about job {handle.job_id}: "
                             f"{type(exc).__name__}: {text[:300]}") from exc


def _ray_status(handle: JobHandle) -> JobStatus:
    info = _ray_call(handle, "get_job_info", handle.job_id)
    state = JobState(getattr(info.status, "value", info.status))
    detail = info.message or ""
    if info.driver_exit_code is not None:
        detail = f"{detail} (exit code {info.driver_exit_code})".strip()
    return JobStatus(state, detail)


# -- local processes ----------------------------------------------------------------------------
def _proc_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; None if no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no such process (or it vanished while being read)
        return None
    return text[text.rindex(")") + 2:].split()


def _is_ours(pid: int, marker: str) -> bool:
    """The live process with this pid belongs to the job we started."""
    if not marker:
        return True
    for part in ("cmdline", "environ"):
        try:
            if marker.encode() in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
        except OSError:
            continue
    return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_fields(int(entry.name))
            if fields is not None and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


def _may_inspect(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return True


def _exit_status(wait_status: int) -> JobStatus:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        return JobStatus(JobState.FAILED, f"killed by {signal.Signals(sig).name}")
    code = os.WEXITSTATUS(wait_status)
    return JobStatus(JobState.SUCCEEDED if code == 0 else JobState.FAILED, f"exit code {code}")


def _write_exit(path: str, wait_status: int) -> None:
    if not path:
        return
    partial = Path(path).with_suffix(".exit-partial")
    with contextlib.suppress(OSError):  # no run folder (any more): the status is lost, not the job
        partial.write_text(str(wait_status))
        partial.replace(path)  # readers see the whole status or none


def _read_exit(path: str) -> int | None:
    try:
        return int(Path(path).read_text()) if path else None
    except (OSError, ValueError):
        return None


def _wait_and_record(process: subprocess.Popen, exit_path: str) -> None:
    try:
        _, wait_status = os.waitpid(process.pid, 0)
    except ChildProcessError:
        return  # collected elsewhere in this process (job_status): it wrote the file
    process.returncode = os.waitstatus_to_exitcode(wait_status)  # Popen must not wait for it again
    _write_exit(exit_path, wait_status)


def popen_recording_exit(exit_path: str) -> Callable[..., subprocess.Popen]:
    """A ``popen`` for ``launch.submit``: starts the process and a daemon thread of this
    process that waits for it and records its exit status in ``exit_path``."""
    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(*args, **kwargs)
        threading.Thread(target=_wait_and_record, args=(process, exit_path), daemon=True,
                         name=f"verl-job-{process.pid}").start()
        return process

    return popen


# Between the launcher's reap and its write of the exit status. Waited only when the status is
# otherwise unknown; 2 s was too short on 2 busy cores (a run failed as "exit status unknown").
EXIT_RECORD_GRACE_S = 10.0


def _await_exit_record(exit_path: str, grace_s: float = EXIT_RECORD_GRACE_S) -> int | None:
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        recorded = _read_exit(exit_path)
        if recorded is not None:
            return recorded
    return None


def _local_status(handle: JobHandle) -> JobStatus:
    pid = handle.pid
    recorded = _read_exit(handle.exit_path)
    if recorded is not None:
        return _exit_status(recorded)
    with contextlib.suppress(ChildProcessError):  # not our child: another process started it
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            return JobStatus(JobState.RUNNING, f"process {pid}")
        _write_exit(handle.exit_path, wait_status)  # collected here: keep it for later questions
        return _exit_status(wait_status)
    fields = _proc_fields(pid)
    if fields is None or (fields[0] != "Z" and not _is_ours(pid, handle.marker)):
        # Gone, and reaped by its parent (whose exit status we cannot read), or the pid is
        # someone else's now. The launching process reaps first and records right after: on
        # this host, give its recording thread a moment before calling the status unknown.
        recorded = _await_exit_record(handle.exit_path)
        if recorded is not None:
            return _exit_status(recorded)
        return JobStatus(JobState.FAILED, "the process ended; its exit status is unknown here")
    if fields[0] == "Z":  # ended, not yet reaped by the worker process that started it
        # /proc/<pid>/stat field 52, the wait status; the kernel writes 0 there for a process
        # we may not inspect, so first check that we may (reading its environ needs the same right).
        exit_code = int(fields[49]) if len(fields) > 49 and _may_inspect(pid) else None
        if exit_code is None:
            return JobStatus(JobState.FAILED, "the process ended; its exit status is unknown here")
        return _exit_status(exit_code)
    return JobStatus(JobState.RUNNING, f"process {pid}")


def _local_stop(handle: JobHandle, force: bool) -> bool:
    """Signal the job's process group. True if a signal was sent."""
    pid, sig = handle.pid, signal.SIGKILL if force else signal.SIGTERM
    fields = _proc_fields(pid)
    if fields is not None:
        # The leader is alive, or a zombie that keeps its group id from being reused.
        if fields[0] != "Z" and not _is_ours(pid, handle.marker):
            return False  # the pid is someone else's now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
            return True
        return False
    # The leader is gone: its group id may be reused, so signal only members that carry the mark.
    members = [member for member in _group_members(pid) if _is_ours(member, handle.marker)]
    for member in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)
    return bool(members)


def _file_tail(path: str, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(log.tell() - max_bytes, 0))
            return log.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"


# -- the API ------------------------------------------------------------------------------------
def job_status(handle: JobHandle) -> JobStatus:
    """PENDING/RUNNING, or how it ended. Raises JobUnreachable, JobNotFound (Ray only)."""
    return _local_status(handle) if handle.local else _ray_status(handle)


def job_stop(handle: JobHandle, *, force: bool = False) -> bool:
    """Ask the job to stop: Ray's stop_job (Ray escalates to SIGKILL itself), or SIGTERM
    (SIGKILL with force) to the local process group. True if a stop was sent."""
    if handle.local:
        return _local_stop(handle, force)
    return bool(_ray_call(handle, "stop_job", handle.job_id))


def job_logs_tail(handle: JobHandle, *, redact: Iterable[str] = (), lines: int = TAIL_LINES,
                  max_chars: int = TAIL_CHARS) -> str:
    """The last lines of the job's log, colours removed and secrets blanked out."""
    if handle.local:
        text = _file_tail(handle.log_path) if handle.log_path else "(no log file)"
    else:
        try:
            text = _ray_call(handle, "get_job_logs", handle.job_id)
        except (JobUnreachable, JobNotFound) as exc:
            text = f"(logs unavailable: {exc})"
    return tail(text, redact=redact, lines=lines, max_chars=max_chars)


def tail(text: str, *, redact: Iterable[str] = (), lines: int = TAIL_LINES, max_chars: int = TAIL_CHARS) -> str:
    text = ANSI.sub("", text)
    for secret in redact:
        if secret:
            text = text.replace(secret, "<redacted>")
    kept = "\n".join(text.rstrip().splitlines()[-lines:])
    return kept[-max_chars:]
