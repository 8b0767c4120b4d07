"""Verifiers by name: score a response against a ground truth with 1.0 or 0.0.

`get_verifier("numeric", rel_tol=1e-4)` returns a `(response, ground_truth) -> float`.

math-verify guards its own calls with signal.alarm, which fails outside the main thread
and clobbers other SIGALRM users (pytest-timeout, for one). We turn that off and, by
default, run math-verify in a helper process instead: a model can write an answer such
as 2^{2^{2^{100}}} on which sympy never returns, and only a process can be stopped.
"""

from __future__ import annotations

import atexit
import inspect
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Verifier = Callable[[str, str], float]

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def exact() -> Verifier:
    """Correct when the response equals the ground truth, surrounding whitespace ignored."""

    def verify(response: str, ground_truth: str) -> float:
        return float(response.strip() == ground_truth.strip())

    return verify


def numeric(*, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Verifier:
    """Correct when the first number in the response is within tolerance of the ground truth."""
    for name, value in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"option {name} must be a number >= 0, got {value!r}")

    def verify(response: str, ground_truth: str) -> float:
        expected = first_number(ground_truth)
        if expected is None:
            raise ValueError(f"numeric verifier: ground truth {ground_truth!r} is not a number")
        got = first_number(response)
        return float(
            got is not None and math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol)
        )

    return verify


def boxed(*, timeout_s: float | None = 5.0, max_chars: int = 1000) -> Verifier:
    """Correct when the last \\boxed{...} of the response is the ground truth, by math-verify.

    timeout_s: seconds per comparison in a helper process (an answer that takes longer
    scores 0.0); None runs math-verify in this process with no time limit, for trusted input.
    max_chars: longer answers are compared as normalised strings, without math-verify.
    """
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0
    ):
        raise ValueError(f"option timeout_s must be a number > 0 or None, got {timeout_s!r}")
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"option max_chars must be an integer >= 1, got {max_chars!r}")

    def verify(response: str, ground_truth: str) -> float:
        answer = last_boxed(response)
        if answer is None:
            return 0.0
        gold = last_boxed(ground_truth) or ground_truth
        same: bool | None = None
        if len(answer) <= max_chars and len(gold) <= max_chars:
            pair = (f"\\boxed{{{gold}}}", f"\\boxed{{{answer}}}")
            if timeout_s is None:
                same = _math_verify(*pair)
            else:
                same = _WORKER.compare(*pair, timeout_s=timeout_s)
        if same is None:  # math-verify could not parse one side
            same = _normalise(answer) == _normalise(gold)
        return float(same)

    return verify


VERIFIERS: dict[str, Callable[..., Verifier]] = {"exact": exact, "numeric": numeric, "boxed": boxed}


def get_verifier(name: str, **options: Any) -> Verifier:
    """The verifier registered under `name`, configured with `options`."""
    factory = VERIFIERS.get(name)
    if factory is None:
        raise ValueError(f"unknown verifier {name!r}; valid: {', '.join(sorted(VERIFIERS))}")
    allowed = inspect.signature(factory).parameters
    for option in options:
        if option not in allowed:
            valid = ", ".join(sorted(allowed)) or "none"
            raise ValueError(f"unknown option {option!r} for verifier {name!r}; valid: {valid}")
    return factory(**options)


def first_number(text: str) -> float | None:
    """The first decimal number in text ("1,234.5" reads as 1234.5), or None."""
    match = _NUMBER.search(text)
    return None if match is None else float(match.group().replace(",", ""))


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} with balanced braces, or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try the one before
    return None


def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text).strip("$.").lower()


def _math_verify(gold: str, answer: str) -> bool | None:
    """math-verify without its signal-based timeouts; None when a side does not parse."""
    from math_verify import parse, verify  # imported late: it pulls in sympy

    try:
        gold_parsed = parse(gold, parsing_timeout=None)
        answer_parsed = parse(answer, parsing_timeout=None)
        if not gold_parsed or not answer_parsed:
            return None
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - math-verify raises many sympy errors on odd input
        return None


# The helper process: one JSON line in ([gold, answer]), one out (true, false or null).
_WORKER_CODE = """
import json, logging, sys
logging.disable(logging.WARNING)  # math-verify warns once that timeouts are off
from workers.problems.verifiers import _math_verify
print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps(_math_verify(*json.loads(line))), flush=True)
"""
_STARTUP_S = 60.0  # importing sympy can take seconds on a busy machine


class _Worker:
    """A long-lived helper process, restarted after a timeout; calls are serialised."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    def compare(self, gold: str, answer: str, *, timeout_s: float) -> bool | None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps([gold, answer]).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._readline(timeout_s)
            if line is None:
                self.stop()
                return False  # too slow to check counts as wrong
            verdict: bool | None = json.loads(line)
            return verdict

    def _start(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._buffer = b""
        if self._readline(_STARTUP_S) != b"ready":
            self.stop()
            raise RuntimeError("the math-verify helper process did not start")

    def _readline(self, timeout_s: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the process died
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.strip()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


_WORKER = _Worker()
atexit.register(_WORKER.stop)
