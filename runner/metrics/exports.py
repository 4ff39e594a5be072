"""Saved queries' exports, built by `arpu build` after the models and published with them: a
BI tool reads `weekly_arpu` like any relation. Each export is its saved query compiled for the
target over the relations this build wrote, materialized as a table or a view; a failed export
fails the build like a failed model (nothing is published)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner.artifacts import BuildResult, ModelResult
from runner.events import Listener, ModelFinished, ModelStarted

if TYPE_CHECKING:
    from runner.engines.base import Engine
    from runner.metrics.query import ProjectContext


def build_exports(ctx: ProjectContext, engine: Engine, relation: Callable[[str], str],
                  listener: Listener, result: BuildResult) -> list[str]:
    """Write target/semantic_manifest.json and build every export; their results join the
    build's. Returns the relations made (to publish). Without metrics/, nothing."""
    folder = ctx.project_dir / "metrics"
    if not folder.is_dir():
        return []
    from runner.engines import target_sql
    from runner.errors import ArpuError
    from runner.metrics.manifest import write_semantic_manifest
    from runner.metrics.query import semantic_layer
    from runner.metrics.sql import SqlGenerator, render
    from runner.metrics.validate import saved_request

    layer = semantic_layer(ctx)
    write_semantic_manifest(ctx.target_dir, layer.manifest, relation)
    target = target_sql(engine.dialect)
    made: list[str] = []
    out_dir = ctx.target_dir / "compiled" / engine.dialect
    for query in layer.manifest.saved_queries.values():
        for export in query.exports:
            name = export.relation
            listener(ModelStarted(name))
            started = time.perf_counter()
            res = ModelResult(name, "success", materialized=export.export_as)
            try:
                plan = layer.planner.plan(saved_request(query))
                tree = SqlGenerator(layer.planner, plan, relation).select()
                sql = render(tree, target)
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / f"{name}.sql"
                path.write_text(f"-- {name}: export of saved query {query.name} "
                                f"({query.where})\n{sql}\n")
                res.compiled_path = str(path.relative_to(ctx.project_dir))
                res.rows = engine.materialize(name, sql, export.export_as)
                made.append(name)
            except ArpuError as exc:
                res.status, res.error = "error", f"saved query {query.name}: {exc}"
            except Exception as exc:  # the warehouse's own error
                first = str(exc).splitlines()[0] if str(exc) else ""
                res.status = "error"
                res.error = (f"saved query {query.name} ({query.where}): "
                             f"{type(exc).__name__}: {first}")
            res.seconds = round(time.perf_counter() - started, 4)
            result.results.append(res)
            listener(ModelFinished(res))
    return made
