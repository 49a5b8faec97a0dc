"""The package's shape: the runtime (what ``python -m bench`` runs, plus the report and verify stages) is
the core; training (``bench.train``), performance (``bench.perf``) and tuning tooling (``bench.tune``) import the runtime, never the
reverse; no module imports itself back through a circle (lazy, function-level imports included);
``reports/`` holds generated reports and measured data only, the scripts live in ``tools/``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

#: sub-packages that are tooling: they may import the runtime; the runtime may not import them
TOOLING = ("bench.train", "bench.perf", "bench.tune")
SCRIPT_SUFFIXES = {".py", ".sh", ".bash", ".ipynb", ".js", ".r", ".m"}


def modules(root: Path, package: str = "bench") -> dict[str, Path]:
    """Dotted module name -> file, for every ``*.py`` of ``root/package`` (packages by their ``__init__``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere in its file (top level or inside functions).
    ``from a.b import c`` counts as ``a.b.c`` when that is a module, else as ``a.b``."""
    package = name.split(".")[0]
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names}
    return {m for m in found if m in known and m != name and m.split(".")[0] == package}


def import_graph(root: Path, package: str = "bench") -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imported(name, path, known) for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def is_tooling(name: str) -> bool:
    return any(name == t or name.startswith(t + ".") for t in TOOLING)


def runtime_to_tooling(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, deps in graph.items() if not is_tooling(a) for b in deps if is_tooling(b))


GRAPH = import_graph(REPO)


def test_the_graph_sees_the_package():
    assert {"bench.cli", "bench.runner", "bench.models.prior", "bench.train.gan", "bench.perf.cells"} <= set(GRAPH)
    assert "bench.models.prior" in GRAPH["bench.methods.prior_method"]
    assert "bench.perf.profiling" in GRAPH["bench.perf.cells"]  # relative and absolute imports resolve
    assert "bench.cli" in GRAPH["bench.perf.cells"]  # a function-level import counts


def test_no_import_circles():
    assert circles(GRAPH) == [], "import circles (break them: a shared leaf module, or data passed in)"


def test_the_runtime_never_imports_tooling():
    assert runtime_to_tooling(GRAPH) == [], f"runtime modules import tooling ({', '.join(TOOLING)})"


def test_tooling_uses_the_runtime():
    for tool in TOOLING:
        deps = set().union(*(d for n, d in GRAPH.items() if is_tooling(n) and n.startswith(tool)))
        assert any(not is_tooling(d) for d in deps), tool


@pytest.fixture
def planted(tmp_path):
    """A small package with a circle through a lazy import and a runtime module importing tooling."""
    pkg = tmp_path / "bench"
    for rel, text in {
        "__init__.py": "",
        "a.py": "from bench.b import f\n",
        "b.py": "def f():\n    from bench import c\n",
        "c.py": "from .a import f\n",
        "runner.py": "import bench.perf.cells\n",
        "perf/__init__.py": "",
        "perf/cells.py": "from bench.runner import *\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return import_graph(tmp_path)


def test_the_checks_catch_a_planted_circle_and_a_wrong_direction(planted):
    assert ["bench.a", "bench.b", "bench.c"] in circles(planted)
    assert ("bench.runner", "bench.perf.cells") in runtime_to_tooling(planted)


def _page_asset(p: Path) -> bool:
    """The JavaScript of a results browser that ``python -m bench.report`` wrote (``<report>/browser/``)."""
    report = p.parent.parent if p.parent.name == "browser" else p.parent.parent.parent
    return "browser" in p.parts and (report / "index.html").is_file() and (report / "README.md").is_file()


def test_reports_hold_no_scripts():
    scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "reports").rglob("*")
                     if p.is_file() and p.suffix.lower() in SCRIPT_SUFFIXES and not _page_asset(p))
    assert scripts == [], "scripts belong in tools/ (reports/ holds generated reports and measured data)"


def test_device_rounds_live_in_tools():
    for rel in ("tools/device/perf/h200_round.sh", "tools/device/train/h200_train_round.sh",
                "tools/device/round_lib.sh", "tools/device/README.md"):
        assert (REPO / rel).is_file(), rel
