"""The project's import graph: circles between modules, and imports that cross a wall.

Reads every ``.py`` file under the project's packages with ``ast`` (imports inside
functions count too: a deferred import is still a dependency) and prints the strongly
connected components of more than one module, then the wall violations. Exit 1 if any.

    python scripts/import_graph.py            # circles and walls
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controlplane", "workers", "frontend")
# (importer prefix, forbidden import prefixes, why) - ARCHITECTURE.md's walls.
WALLS = (
    ("workers", ("django", "controlplane", "frontend", "rest_framework", "celery"),
     "workers/ runs standalone from a config file: no Django, no control plane"),
    ("workers.selection", ("workers.engines",), "selection is pure algorithms, below the engines"),
    ("workers.problems", ("workers.engines",), "problems are shared by both engines, below them"),
    ("controlplane", ("frontend",), "the control plane does not know its pages"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str) -> Iterable[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if "migrations" not in p.parts}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        for target in imports(path, name):
            # the deepest project module the import names (a.b.C -> a.b if C is not a module)
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def raw_imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if "migrations" not in p.parts:
                name = module_name(p)
                out[name] = set(imports(p, name))
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def wall_violations() -> list[str]:
    out = []
    for name, targets in sorted(raw_imports().items()):
        for prefix, forbidden, why in WALLS:
            if name == prefix or name.startswith(prefix + "."):
                crossed = {f for t in targets for f in forbidden if t == f or t.startswith(f + ".")}
                out.extend(f"{name} imports {f}: {why}" for f in sorted(crossed))
    return out


def main() -> int:
    found = circles(graph())
    for component in found:
        print("circle:", " <-> ".join(component))
    walls = wall_violations()
    for line in walls:
        print("wall:", line)
    print(f"{len(found)} import circles, {len(walls)} wall crossings")
    return 1 if found or walls else 0


if __name__ == "__main__":
    sys.exit(main())
