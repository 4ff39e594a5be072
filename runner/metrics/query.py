"""`arpu query`: load and check `metrics/`, plan a query, compile it for the target (or any
dialect) and run it on the published relations. What the CLI and the tests call.

sqlglot and the planner are imported when first needed, not with this module: `run_query`
opens the published relations in a thread while they load (a third of `arpu query`'s time)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runner.artifacts import Shown
from runner.errors import UsageError
from runner.metrics.spec import QueryRequest, SemanticManifest, SemanticModel

if TYPE_CHECKING:
    from runner.config import Config
    from runner.engines.base import Engine
    from runner.metrics.plan import Planner, QueryPlan


RelationNamer = Callable[[str], str]  # an arpu model's name -> its relation, quoted (DuckDB)


class ProjectContext(Protocol):
    """What the metrics layer reads of the project it serves: runner.context.Context is one,
    and the metrics package does not import it (imports point one way)."""

    @property
    def project_dir(self) -> Path: ...

    @property
    def config(self) -> Config: ...

    @property
    def target_name(self) -> str: ...

    @property
    def target_dir(self) -> Path: ...

    def reader(self) -> Engine:
        """The target's published relations, connected."""


class SemanticLayer:
    """The project's semantic models, metrics and saved queries, checked."""

    def __init__(self, project_dir: Path, model_names: list[str],
                 metrics_dir: Path | None = None) -> None:
        from runner.metrics.load import load_manifest
        from runner.metrics.validate import validate_manifest

        self.project_dir = project_dir
        self.manifest: SemanticManifest = load_manifest(project_dir, metrics_dir)
        self.planner: Planner = validate_manifest(self.manifest, model_names)

    @classmethod
    def for_project(cls, project_dir: Path, config: Config) -> SemanticLayer:
        models = project_dir / config.models_path
        names = sorted({p.stem for p in models.rglob("*.sql")}) if models.is_dir() else []
        return cls(project_dir, names)

    def plan(self, request: QueryRequest) -> QueryPlan:
        return self.planner.plan(request)

    def compile(self, request: QueryRequest, dialect: str, relation: RelationNamer,
                pretty: bool = True) -> CompiledQuery:
        """Plan and write the query for `dialect` (no connection)."""
        from runner.engines import target_sql
        from runner.metrics.sql import SqlGenerator, render

        target = target_sql(dialect)
        plan = self.plan(request)
        tree = SqlGenerator(self.planner, plan, relation).select()
        return CompiledQuery(plan, render(tree, target, pretty), dialect)


@dataclass
class CompiledQuery:
    plan: QueryPlan
    sql: str
    dialect: str


@dataclass
class QueryResult:
    compiled: CompiledQuery
    shown: Shown
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def semantic_layer(ctx: ProjectContext) -> SemanticLayer:
    layer = getattr(ctx, "_semantic_layer", None)
    if layer is None:
        layer = SemanticLayer.for_project(ctx.project_dir, ctx.config)
        ctx._semantic_layer = layer  # type: ignore[attr-defined]
    return layer


def parse_time(text: str | None, option: str) -> dt.datetime | None:
    """--start-time / --end-time: a date or an ISO 8601 timestamp (UTC unless it carries an
    offset)."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"'{text}' is not a date or an ISO 8601 timestamp",
                         location=option) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def request_from_options(metrics: str, group_by: str | None = None,
                         where: list[str] | None = None, order_by: str | None = None,
                         limit: int | None = None, start_time: str | None = None,
                         end_time: str | None = None) -> QueryRequest:
    """The command line's comma-separated lists as a QueryRequest."""

    def split(text: str | None) -> list[str]:
        return [part.strip() for part in (text or "").split(",") if part.strip()]

    return QueryRequest(split(metrics), list(split(group_by)), list(where or []),
                        list(split(order_by)), limit, parse_time(start_time, "--start-time"),
                        parse_time(end_time, "--end-time"))


def compile_query(ctx: ProjectContext, request: QueryRequest, dialect: str | None = None
                  ) -> CompiledQuery:
    """The query's SQL for `dialect` (default: the target's), without connecting."""
    target = ctx.config.targets[ctx.target_name]
    chosen = dialect or target.type
    return semantic_layer(ctx).compile(request, chosen,
                                       partial(target.relation, published=True))


def run_query(ctx: ProjectContext, request: QueryRequest) -> QueryResult:
    """Compile for the target and run on its published relations."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="arpu-connect") as pool:
        connecting = pool.submit(ctx.reader)  # while sqlglot loads and the query compiles
        compiled = compile_query(ctx, request)
        compiled_at = time.perf_counter()
        engine = connecting.result()
    try:
        columns, rows = engine.fetch(compiled.sql)
    except Exception:
        for model in sorted({m.model for m in _models_read(ctx, compiled.plan)}):
            if not engine.relation_exists(model):
                raise UsageError(f"'{model}' has not been built yet: run `arpu build`",
                                 location="arpu query") from None
        raise
    done = time.perf_counter()
    plan = compiled.plan
    order = [f"{n} desc" if desc else n for n, desc in plan.order_by] or plan.group_by
    shown = Shown(" ".join(plan.metrics) + (f" by {', '.join(plan.group_by)}"
                                            if plan.group_by else ""),
                  columns, rows, len(rows), order)
    return QueryResult(compiled, shown, done - started,
                       {"compile": compiled_at - started, "run": done - compiled_at})


def _models_read(ctx: ProjectContext, plan: QueryPlan) -> list[SemanticModel]:
    """The semantic models a plan reads (its measures' and every joined one)."""
    from runner.metrics.plan import ConversionLeaf

    layer = semantic_layer(ctx)
    models = layer.manifest.semantic_models
    names: set[str] = set()
    for leaf in plan.leaves:
        measures = [leaf.base, leaf.conversion] if isinstance(leaf, ConversionLeaf) else \
            [leaf.measure]
        for measure in measures:
            names.add(layer.planner.measure(measure).semantic_model)
        for elements in [plan.elements[leaf], *plan.filter_elements[leaf].values()]:
            for element in elements:
                names.add(element.model)
                names.update(h.right for h in element.hops)
    return [models[n] for n in sorted(names)]


def list_semantic(ctx: ProjectContext, metrics: bool, dimensions: bool, names: list[str]) -> Shown:
    """`arpu ls --metrics` (every metric) or `arpu ls --dimensions --metrics A,B`."""
    from runner.metrics.listing import list_dimensions, list_metrics

    planner = semantic_layer(ctx).planner
    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if dimensions:
        if not wanted:
            raise UsageError("name the metrics: arpu ls --dimensions --metrics A,B",
                             location="--dimensions")
        return list_dimensions(planner, wanted)
    if wanted:
        raise UsageError("metric names go with --dimensions (arpu ls --dimensions --metrics "
                         "A,B)", location="arpu ls")
    return list_metrics(planner)
