"""Habits of the repository itself, checked where CI runs: a clean clone."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_COMMITTED_BYTES = 1_000_000  # generated artefacts: keep the JSON, regenerate figures


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_committed_file_over_one_megabyte() -> None:
    files = tracked_files()
    assert len(files) > 100, "git ls-files listed almost nothing: not the project's checkout?"
    too_big = {str(p.relative_to(ROOT)): p.stat().st_size for p in files
               if p.is_file() and p.stat().st_size > MAX_COMMITTED_BYTES}
    assert not too_big, f"files over 1 MB are committed (regenerate them instead): {too_big}"
