"""The layout of runner/: outside runner/engines/ no code knows which engine it runs on, and the
modules' imports point one way (no cycles). Both read the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "runner"
TARGETS = {"duckdb", "postgres", "spark", "clickhouse", "snowflake", "bigquery", "redshift",
           "trino", "databricks"}
# where target differences belong (each target's file); runner/dialect.py owns the source dialect
OWNERS = ("engines", "dialect.py")


def _modules(root: Path = ROOT, top: str = "runner") -> dict[str, Path]:
    found = {}
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _names_a_target(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TARGETS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_target(e) for e in node.elts)
    return False


def _mentions_dialect(node: ast.AST) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return "dialect" in name.lower()


def _target_branches(path: Path) -> list[str]:
    """`line: comparison` of each comparison with a target's name or a dialect."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and not all(
                isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(_names_a_target(o) or _mentions_dialect(o) for o in operands):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_target_branches_outside_the_engines() -> None:
    """`if dialect == ...`, `target.type in ("duckdb", ...)` and the like live in
    runner/engines/ (flags and methods of each Engine) or the target classes of runner/config.py
    (asked, not compared), never in the modules that use them."""
    branches = []
    for path in _modules().values():
        inside = path.relative_to(RUNNER).parts[0]
        if inside not in OWNERS:
            branches += [f"{path.relative_to(ROOT)}:{b}" for b in _target_branches(path)]
    assert branches == [], "\n".join(branches)


def test_the_check_finds_a_target_branch(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text('if engine.dialect == "duckdb":\n    pass\n'
                      'if t.type in ("spark",):\n    pass\n'
                      'ok = spec.type == "unexpected_rows" and dialect is not None\n')
    assert _target_branches(sample) == ["1: engine.dialect == 'duckdb'",
                                        "3: t.type in ('spark',)"]


def _imported(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import statement, or an `import_module(...)` call, may load: an
    f-string's leading text stands for every module it starts (a registry's lazy import)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            anchor = parts[:len(parts) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call) and node.args and "import_module" in ast.unparse(node.func):
        name = node.args[0]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return [name.value]
        if isinstance(name, ast.JoinedStr) and isinstance(name.values[0], ast.Constant):
            return [f"{name.values[0].value}*"]
    return []


def _import_graph(root: Path = ROOT, top: str = "runner") -> dict[str, set[str]]:
    """Every import among the modules under `root/top`, wherever it is written: module level,
    inside functions (run later, but a circle all the same) and under `if TYPE_CHECKING:`."""
    modules = _modules(root, top)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, package):
                if target.endswith("*"):
                    graph[name] |= {m for m in modules if m.startswith(target[:-1])}
                elif target in modules:
                    graph[name].add(target)
        graph[name].discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in sorted(graph[node]):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module: `[a, b, ..., a]`."""
    first, inside = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for after in sorted(graph[node] & inside):
                if after == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), first]
                if after not in came_from:
                    came_from[after] = node
                    following.append(after)
        frontier = following
    raise AssertionError(f"{component} is not a circle")


def _circles(root: Path = ROOT, top: str = "runner") -> list[str]:
    graph = _import_graph(root, top)
    return [" -> ".join(_cycle_path(graph, c)) for c in _cycles(graph)]


def test_no_import_cycles_among_runner_modules() -> None:
    """Dependencies point one way: types at the bottom, orchestration at the top. Every import
    counts: one inside a function or under TYPE_CHECKING still ties the two modules together."""
    circles = _circles()
    assert circles == [], "\n".join(circles)


def test_the_cycle_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    """A circle closed by a function-level import, a TYPE_CHECKING import and a registry's
    `import_module(f"...")`; the module that only imports into it is not part of it."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from .c import X\n")
    (package / "c.py").write_text("import importlib\n\n\ndef g(name):\n"
                                  "    return importlib.import_module(f'pkg.a{name}')\n")
    (package / "d.py").write_text("from pkg.a import f\n")
    assert _circles(tmp_path, "pkg") == ["pkg.a -> pkg.b -> pkg.c -> pkg.a"]


def test_the_metrics_layer_does_not_import_the_context() -> None:
    """runner/metrics/ takes what it needs (runner.metrics.query.ProjectContext, an engine, a
    relation namer): the Context, the compiler and the build sit above it."""
    graph = _import_graph()
    above = {"runner.context", "runner.compile", "runner.build", "runner.cli"}
    imported = {m: graph[m] & above for m in graph if m.startswith("runner.metrics")}
    assert {m: found for m, found in imported.items() if found} == {}
