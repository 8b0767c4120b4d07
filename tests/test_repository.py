"""Habits of the repository itself, checked where CI runs: a clean clone."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

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


def load_import_graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_circles_and_no_wall_crossings() -> None:
    """workers/ stays Django-free, selection stays below the engines, modules import one way."""
    graph = load_import_graph()
    edges = graph.graph()
    assert "workers.selection.pipeline" in edges and "controlplane.runs.services" in edges
    assert graph.circles(edges) == []
    assert graph.wall_violations() == []


def test_the_import_graph_sees_a_circle_and_a_wall_crossing(tmp_path, monkeypatch) -> None:
    """The check above can fail: a two-module circle and a Django import under workers/ are found."""
    graph = load_import_graph()
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text("")
    (tmp_path / "workers" / "a.py").write_text("from workers import b\nimport django\n")
    (tmp_path / "workers" / "b.py").write_text("def f():\n    from workers.a import x\n")
    monkeypatch.setattr(graph, "ROOT", tmp_path)
    monkeypatch.setattr(graph, "PACKAGES", ("workers",))
    assert graph.circles(graph.graph()) == [["workers.a", "workers.b"]]
    assert graph.wall_violations() == ["workers.a imports django: " + graph.WALLS[0][2]]
