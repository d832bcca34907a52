"""The package's layout: imports flow one way, with no cycle, not even inside a function or under
``if TYPE_CHECKING:``; and below the API and the command line, no function takes more than eight
parameters (the request is handed down whole).

The graph is read from the source (every ``import`` statement, at any depth), so a cycle that only
a lazy import or a type annotation hides still fails here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "burden"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "burden.trace" in graph["burden.memory"]
    assert graph["burden.figures"] <= {"burden.errors", "burden.suggest"}


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_graph_sees_type_checking_imports(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from typing import TYPE_CHECKING\n"
                                           "if TYPE_CHECKING:\n    from .b import B\n")
    (tmp_path / "pkg" / "b.py").write_text("from .a import A\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "pkg")
    assert cycles(import_graph()) == [["pkg.a", "pkg.b"]]


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    named = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return len(named) + (a.vararg is not None) + (a.kwarg is not None)


def test_no_function_below_the_api_takes_more_than_eight_parameters():
    """The public functions keep their keywords; every layer below takes the request whole. The
    per-op formulas in ``conventions/`` mirror the ops' own signatures and are left out."""
    wide = []
    for name, path in _modules().items():
        if name in ("burden.api", "burden.cli") or name.startswith("burden.conventions"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parameters(node) > 8:
                wide.append(f"{name}.{node.name}: {_parameters(node)}")
    assert wide == []


def test_the_parameter_count_counts_what_it_should():
    tree = ast.parse("def f(self, a, b=1, *args, c, **kw): pass")
    assert _parameters(tree.body[0]) == 5


def test_results_are_plain_data_below_the_views():
    graph = import_graph()
    below = {"burden.figures", "burden.records", "burden.counting", "burden.trace", "burden.memory"}
    views = {m for m in graph if m.startswith("burden.render")} | {"burden.api", "burden.results", "burden.analysis"}
    for module in below:
        assert not (graph[module] & views), module


def test_the_command_lines_choices_are_the_librarys():
    from burden import options
    from burden.conventions import list_conventions, list_memory_conventions
    from burden.inputs import DTYPES

    assert list(options.CONVENTIONS) == list_conventions()
    assert list(options.MEMORY_CONVENTIONS) == list_memory_conventions()
    assert list(options.DTYPE_NAMES) == list(DTYPES)
