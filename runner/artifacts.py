"""What a command leaves behind and hands back: `target/manifest.json` and
`target/run_results.json` (the files CI and tools read), `arpu_build_info` (the vars each
published relation was built with, published with them) and the result objects of commands."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import __version__
from runner.dialect import SOURCE_DIALECT

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.compile import Compiler
    from runner.engines.base import Engine

# Published beside the models: one row per published relation, with the vars it was built with.
BUILD_INFO = "arpu_build_info"


@dataclass
class ModelResult:
    model: str
    status: str  # success | error | skipped
    rows: int | None = None
    seconds: float = 0.0
    error: str | None = None
    compiled_path: str | None = None
    materialized: str | None = None
    validation_seconds: float = 0.0
    expectations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BuildResult:
    target: str
    results: list[ModelResult] = field(default_factory=list)
    seconds: float = 0.0
    messages_loaded: int = 0
    duplicates_removed: int = 0
    seeded: bool = False
    validated: bool = False
    validation_seconds: float = 0.0
    publish_seconds: float = 0.0
    error: str | None = None  # why the build stopped before its end (aborted, or running)

    @property
    def expectations(self) -> list[dict[str, Any]]:
        return [e for r in self.results for e in r.expectations]

    @property
    def success(self) -> bool:
        return self.error is None and all(r.status == "success" for r in self.results)

    @property
    def failed(self) -> list[ModelResult]:
        return [r for r in self.results if r.status == "error"]


def _metadata(target: str, dialect: str) -> dict[str, Any]:
    return {
        "arpu_version": __version__,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "dialect": dialect,
    }


def write_manifest(target_dir: Path, compiler: Compiler) -> Path:
    dialect = compiler.target.dialect
    nodes = {}
    for name in compiler.graph.order:
        model = compiler.models[name]
        nodes[name] = {
            "path": str(model.path.relative_to(compiler.project_dir)),
            "description": model.config.description.strip(),
            "materialized": model.materialized,
            "unique_key": model.config.unique_key,
            "tags": model.config.tags,
            "depends_on": model.depends_on,
            "sources": [".".join(s) for s in model.sources],
            "compiled_path": f"target/compiled/{dialect}/{name}.sql",
        }
    manifest = {"metadata": _metadata(compiler.target.name, dialect), "nodes": nodes}
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def write_run_results(target_dir: Path, result: BuildResult, dialect: str) -> Path:
    payload = {
        "metadata": _metadata(result.target, dialect),
        "success": result.success,
        "error": result.error,
        "elapsed_seconds": round(result.seconds, 3),
        "messages_loaded": result.messages_loaded,
        "duplicates_removed": result.duplicates_removed,
        "validated": result.validated,
        "validation_seconds": round(result.validation_seconds, 3),
        "publish_seconds": round(result.publish_seconds, 3),
        "results": [asdict(r) for r in result.results],
    }
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / "run_results.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def write_results(target_dir: Path, result: BuildResult, dialect: str) -> None:
    """run_results.json and junit.xml, both replaced by every build and test run (a build
    without validation writes a junit.xml without expectations)."""
    from runner.quality.junit import write_junit
    from runner.quality.spec import ExpectationResult

    write_run_results(target_dir, result, dialect)
    cases = [
        ExpectationResult(r.model, e["expectation"], e["severity"], e["success"],
                          e["observed"], e["failing_examples"],
                          r.validation_seconds / max(len(r.expectations), 1), e["exception"])
        for r in result.results for e in r.expectations
    ]
    if result.error is not None:  # CI sees a failed build, not a missing test
        cases.append(ExpectationResult("build", "build completed", "error", False,
                                       result.error, exception=result.error))
    write_junit(target_dir / "junit.xml", cases)


@dataclass
class Shown:
    """`arpu show`: the first rows of a relation in key order, and how many it has."""

    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    total: int
    order_by: list[str] = field(default_factory=list)
    json_columns: set[str] = field(default_factory=set)


def vars_text(vars_: dict[str, Any]) -> str:
    """Vars as `arpu_build_info` stores them: a build compares them as text (build.py)."""
    return json.dumps(vars_, sort_keys=True, separators=(",", ":"), default=str)


def record_build(engine: Engine, relation: Callable[[str], str], ran: list[str],
                 published: list[str], vars_: dict[str, Any]) -> list[str]:
    """Write `arpu_build_info` where the build writes, just before it publishes: the models
    this build ran get its vars (`vars_`, JSON-ready) and the time; the others keep the row of
    the build that made them (the previous table is carried like the relations it describes).
    Returns `published` with the table added, for `Engine.publish`."""
    from sqlglot import exp

    from runner.dialect import transpile

    def sql(text: str) -> str:  # written in the models' dialect
        return transpile(text, engine.dialect)

    before: dict[str, tuple[Any, ...]] = {}
    if engine.relation_exists(BUILD_INFO):
        _, rows = engine.fetch(sql("select model, vars, built_at, arpu_version "
                                   f"from {relation(BUILD_INFO)}"))
        before = {str(r[0]): tuple(r[1:]) for r in rows}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ",
                                                                          timespec="seconds")
    text = vars_text(vars_)
    fresh = set(ran)

    def literal(value: Any) -> str:
        return "null" if value is None else exp.Literal.string(str(value)).sql(SOURCE_DIALECT)

    values = []
    for name in published:
        info = (text, now, __version__) if name in fresh else before.get(name, (None,) * 3)
        values.append(f"({literal(name)}, {', '.join(literal(v) for v in info)})")
    engine.materialize(BUILD_INFO, sql(
        "select cast(model as varchar) as model, cast(vars as varchar) as vars, "
        "cast(built_at as timestamp) as built_at, cast(arpu_version as varchar) as arpu_version "
        f"from (values {', '.join(values or ['(null, null, null, null)'])}) "
        "as t(model, vars, built_at, arpu_version)" + ("" if values else " where false")),
        "table")
    return [*published, BUILD_INFO]
