"""Dependencies run one way (DESIGN.md, issue #12), checked over the real import graph (grimp).

    scoring      -> numpy/numba only: no grpc, no services, no vitrine
    services     -> scoring, services, vitrine.v1 (the generated stubs); never the rest of vitrine
    vitrine      -> anything installed; never benchmarks or tests
    benchmarks   -> the installed packages; never tests
    tests        -> imported by nothing else
and no import cycle among the modules of the installed packages. Imports inside functions count:
a lazy import is still a dependency (it is how service.py and servicer.py hid theirs). Imports
under TYPE_CHECKING count for the layers but not for cycles: they are annotations, not a load order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grimp
import pytest

INSTALLED = ("scoring", "services", "vitrine")
GRPC_PACKAGES = ("grpc", "grpc_health", "grpc_reflection", "grpc_tools", "google")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*INSTALLED, "tests", "benchmarks", include_external_packages=True)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _edges(graph: grimp.ImportGraph, importer_top: str) -> Iterator[tuple[str, str]]:
    for module in sorted(graph.modules):
        if _top(module) == importer_top:
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                yield module, imported


def _where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    lines = graph.get_import_details(importer=importer, imported=imported)
    return ", ".join(f"line {d['line_number']}" for d in lines) or "?"


def _violations(graph: grimp.ImportGraph, importer_top: str, forbidden: Callable[[str], bool]) -> list[str]:
    return [f"{a} imports {b} ({_where(graph, a, b)})" for a, b in _edges(graph, importer_top) if forbidden(b)]


def test_scoring_is_pure(graph: grimp.ImportGraph) -> None:
    bad = _violations(graph, "scoring", lambda m: _top(m) in (*GRPC_PACKAGES, "services", "vitrine", "tests",
                                                               "benchmarks"))
    assert not bad, "scoring/ is pure NumPy/Numba:\n" + "\n".join(bad)


def test_services_use_only_the_generated_stubs_of_vitrine(graph: grimp.ImportGraph) -> None:
    def forbidden(m: str) -> bool:
        if _top(m) in ("tests", "benchmarks"):
            return True
        return _top(m) == "vitrine" and m != "vitrine" and not m.startswith("vitrine.v1")

    bad = _violations(graph, "services", forbidden)
    assert not bad, "services/ may import vitrine.v1 only:\n" + "\n".join(bad)


@pytest.mark.parametrize("importer", ["vitrine", "benchmarks"])
def test_no_import_of_tests_or_benchmarks(graph: grimp.ImportGraph, importer: str) -> None:
    forbidden = ("tests",) if importer == "benchmarks" else ("tests", "benchmarks")
    bad = _violations(graph, importer, lambda m: _top(m) in forbidden)
    assert not bad, f"{importer}/ never imports {' or '.join(forbidden)}:\n" + "\n".join(bad)


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*INSTALLED, exclude_type_checking_imports=True)
    modules = {m for m in graph.modules if _top(m) in INSTALLED}
    cycles = _cycles(graph, modules)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph, set(graph.modules)) == [["p.a", "p.b", "p.c"]]



def test_the_rules_catch_a_forbidden_import() -> None:
    graph = grimp.ImportGraph()
    graph.add_import(importer="scoring.kernel", imported="grpc", line_number=3, line_contents="import grpc")
    graph.add_import(importer="services.x", imported="vitrine.demo", line_number=5, line_contents="import vitrine.demo")
    graph.add_import(importer="services.x", imported="vitrine.v1.common_pb2", line_number=6,
                     line_contents="from vitrine.v1 import common_pb2")
    assert _violations(graph, "scoring", lambda m: _top(m) == "grpc") == ["scoring.kernel imports grpc (line 3)"]
    assert _violations(graph, "services", lambda m: m.startswith("vitrine.demo")) == [
        "services.x imports vitrine.demo (line 5)"]
