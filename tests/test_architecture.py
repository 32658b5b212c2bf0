"""The layer picture holds: no import cycle, and reading a config imports neither torch nor Ray.

The layers themselves are import-linter contracts (``pyproject.toml``, run by ``scripts/check.sh``);
these tests state the two properties a newcomer relies on in plain Python.
"""

from __future__ import annotations

import subprocess
import sys

import grimp


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Every group of two or more modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycle_in_raystudy_or_analysis():
    # every import counts: top-level, inside functions and under TYPE_CHECKING
    graph = grimp.build_graph("raystudy", "analysis", exclude_type_checking_imports=False)
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert strongly_connected(graph) == [{"a.x", "a.y"}]


def test_reading_a_config_imports_neither_torch_nor_ray():
    code = (
        "import sys; from raystudy.config import load_config; load_config(preset='demo'); "
        "print(sorted(m for m in ('torch', 'ray', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
