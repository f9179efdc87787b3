"""The import graph of `app` (issue #21): no cycle between modules, nothing imported upward by the modules
at the bottom (app.db, app.errors), the rules a functional core, the models free of any domain. The layers
between packages are checked by import-linter (`lint-imports`, [tool.importlinter] in pyproject.toml)."""

from __future__ import annotations

from functools import cache

import grimp
import pytest

DOMAINS = (
    "app.admin",
    "app.audit",
    "app.exports",
    "app.flux",
    "app.france_travail",
    "app.integrations",
    "app.orientation",
    "app.persons",
    "app.pilotage",
)


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("app", cache_dir=None)


def imported_by(package: str) -> set[str]:
    """What the modules of `package` (itself included) import directly, outside `package`."""
    g = graph()
    modules = {package} | (g.find_descendants(package) if g.find_children(package) else set())
    return {
        imported
        for module in modules
        for imported in g.find_modules_directly_imported_by(module)
        if imported != package and not imported.startswith(package + ".")
    }


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    g = graph()
    edges = {m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
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
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_the_graph_is_of_this_checkout():
    import app

    assert graph().find_children("app"), app.__file__
    assert "app.errors" in graph().modules


def test_no_import_cycle_between_modules():
    assert cycles() == []


@pytest.mark.parametrize("module", ["app.db", "app.errors"])
def test_the_bottom_imports_nothing_but_settings_and_kit(module):
    upward = {m for m in imported_by(module) if m.startswith("app.")} - {"app.settings"}
    assert {m for m in upward if not m.startswith("app.kit")} == set()


def test_errors_import_no_web_framework():
    g = grimp.build_graph("app", "fastapi", "starlette", cache_dir=None)
    assert not g.find_modules_directly_imported_by("app.errors") & {"fastapi", "starlette"}


def test_the_rules_import_nothing_of_the_application():
    assert {m for m in imported_by("app.rules") if m == "app" or m.startswith("app.")} == set()


def test_the_models_import_no_domain():
    shells = ("app.api", "app.cli", "app.main", "app.demo")
    for module in imported_by("app.models"):
        assert not module.startswith(DOMAINS + shells), module


# The domains from the top down (docs/architecture.md): a domain imports only the domains below it. The same
# order is import-linter's layers contract in pyproject.toml.
DOMAINS_TOP_DOWN = (
    ("app.admin", "app.pilotage"),
    ("app.exports",),
    ("app.flux",),
    ("app.integrations",),
    ("app.orientation",),
    ("app.france_travail",),
    ("app.persons",),
    ("app.audit",),
)


def test_no_domain_imports_a_domain_above_it_or_beside_it():
    rank = {domain: n for n, layer in enumerate(DOMAINS_TOP_DOWN) for domain in layer}
    assert set(rank) == set(DOMAINS)
    upward = []
    for domain, level in rank.items():
        for module in imported_by(domain):
            other = ".".join(module.split(".")[:2])
            if other in rank and other != domain and rank[other] <= level:
                upward.append(f"{domain} imports {module}")
    assert upward == []
