"""The layout of runner/: outside runner/engines/ no code knows which engine it runs on, and the
modules' imports point one way (no cycles). Both read the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "runner"
TARGETS = {"duckdb", "postgres", "spark", "clickhouse", "snowflake", "bigquery", "redshift",
           "trino", "databricks"}
# where target differences belong; runner/dialect.py owns the source dialect
OWNERS = ("engines", "metrics", "dialect.py")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(RUNNER.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
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


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: top level, and inside top-level `if`/`try`
    blocks; not those inside functions, nor under `if TYPE_CHECKING:` (never run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending += node.orelse
        elif isinstance(node, (ast.If, ast.Try)):
            pending += node.body + node.orelse + getattr(node, "finalbody", [])
            pending += [s for h in getattr(node, "handlers", []) for s in h.body]
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
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


def test_no_import_cycles_among_runner_modules() -> None:
    """Dependencies point one way: types at the bottom, orchestration at the top."""
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
