"""One `arpu build` (or `run`) and one `arpu test`, as the Context calls them. A build loads
the sample into a fresh project, compiles, runs the selected models through the scheduler
(each compiled ahead on one thread, written as a table, view or merge, then validated), builds
the saved queries' exports and publishes; `arpu test` validates what is published now."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from runner import interrupts
from runner.artifacts import (
    BUILD_INFO,
    BuildResult,
    ModelResult,
    record_build,
    vars_text,
    write_manifest,
)
from runner.errors import ArpuError, ExecutionError
from runner.events import (
    Listener,
    ModelFinished,
    ModelStarted,
    SampleLoaded,
    SourceFilesLoaded,
    UnfinishedLoadsDiscarded,
)
from runner.faults import fault_point
from runner.scheduler import Scheduler

if TYPE_CHECKING:
    from runner.compile import CompiledModel, Compiler, Increment
    from runner.config import Config
    from runner.engines.base import Engine
    from runner.project import Model
    from runner.quality.validator import Validator
    from runner.sources import RawSources


class BuildContext(Protocol):
    """What a build reads of the project and its connections: runner.context.Context is one,
    and this module does not import it (the Context calls here: imports point one way)."""

    @property
    def project_dir(self) -> Path: ...

    @property
    def target_dir(self) -> Path: ...

    @property
    def config(self) -> Config: ...

    @property
    def target_name(self) -> str: ...

    @property
    def sources(self) -> RawSources: ...

    def compiler(self) -> Compiler: ...

    def engine(self) -> Engine: ...

    def reader(self) -> Engine: ...

    def close_reader(self) -> None: ...

    def sql_for_target(self, sql: str) -> str: ...

    def write_results(self, result: BuildResult) -> None: ...


# Vars that name a value of the data: the model that holds those values, its column, what
# they are called. A value the data does not have fails that model (and skips its dependents).
DATA_VARS = {
    "category_opportunities": ("target_category", "category", "categories"),
    "experiment_results": ("control_variant", "variant", "variants"),
}


def build(ctx: BuildContext, select: list[str] | None, listener: Listener, validate: bool,
          full_refresh: bool, exclude: list[str] | None, fail_fast: bool, started: float
          ) -> BuildResult:
    """Run the selected models in dependency order, validating each right after it is
    built, then publish them all at once, or nothing when one failed."""
    interrupts.building()
    # a fresh project loads the sample (DuckDB's work, off the GIL) while Python compiles
    with ThreadPoolExecutor(1, thread_name_prefix="arpu-compile") as pool:
        compiling = pool.submit(ctx.compiler)
        seeded = ctx.sources.ensure()
        compiler = compiling.result()
    names = compiler.graph.select(select, exclude)
    result = BuildResult(target=ctx.target_name, validated=validate)
    if seeded is not None and ctx.config.source.path is not None:
        listener(SourceFilesLoaded(ctx.config.source.path, seeded, ctx.sources.sample_removed))
    elif seeded is not None:
        result.seeded = True
        listener(SampleLoaded(str(ctx.config.seed_path), seeded))
    if ctx.sources.unfinished_discarded:
        listener(UnfinishedLoadsDiscarded(ctx.sources.unfinished_discarded))
    engine = ctx.engine()
    write_manifest(ctx.target_dir, compiler)
    validator = open_validator(ctx, names, fast=True) if validate else None
    batch = ctx.sources.batch_load_id()
    removed = ctx.sources.removed_loads_pending()
    full_refresh = full_refresh or removed
    published = False
    ctx.close_reader()  # the build attaches the published file, then renames over it
    try:
        engine.begin_build(
            carry=[n for n in compiler.graph.order if n not in names] + [BUILD_INFO],
            incremental=[] if full_refresh or batch is None else
            [n for n in names if compiler.models[n].materialized == "incremental"])
        work = ModelWork(ctx, compiler, engine, validator, batch, full_refresh)
        scheduler = Scheduler(compiler.graph, engine.concurrency, listener, fail_fast)
        with work.compiling_ahead(names):
            result.results.extend(scheduler.run(names, work))
        order = {name: i for i, name in enumerate(names)}
        result.results.sort(key=lambda r: order[r.model])
        if validator is not None:
            validator.close()
            validator = None
        result.validation_seconds = sum(r.validation_seconds for r in result.results)
        _count_messages(engine, result)
        exported: list[str] = []
        if result.success:  # saved queries' exports (metrics/*.yml), published with them
            from runner.metrics.exports import build_exports

            exported = build_exports(ctx, engine, compiler.relation, listener, result)
        if result.success:
            t0 = time.perf_counter()
            engine.publish(record_build(
                engine, compiler.relation, [*names, *exported],
                engine.existing(list(compiler.graph.order)) + exported,
                ctx.config.vars.model_dump(mode="json")))
            interrupts.published()  # DuckDB's publish says so as it renames
            published = True
            if removed and set(names) == set(compiler.graph.order):
                ctx.sources.forget_removed_loads()
            result.publish_seconds = time.perf_counter() - t0
    finally:
        if validator is not None:
            validator.close()
        if not published:
            engine.abandon_build()
    result.seconds = time.perf_counter() - started
    ctx.write_results(result)
    return result


def _count_messages(engine: Engine, result: BuildResult) -> None:
    """The build's summary: messages in the raw table, and how many staging deduplicated."""
    if engine.relation_exists("stg_events") and engine.relation_exists("raw_events"):
        raw = int(engine.scalar("select count(*) from raw_events"))
        kept = int(engine.scalar("select count(*) from stg_events"))
        result.messages_loaded, result.duplicates_removed = raw, raw - kept


class BuildStart(NamedTuple):
    """The state a build plans from: each incremental model's watermark, the vars each model
    was last published with (arpu_build_info), and the relations there."""

    marks: dict[str, int]
    vars: dict[str, str]
    present: set[str]


class ModelWork:
    """What running one model means in a build: its plan (decided before the build starts),
    its SQL (compiled ahead on one thread), writing it, checking the vars that name data,
    validating it. Called by the scheduler's threads."""

    def __init__(self, ctx: BuildContext, compiler: Compiler, engine: Engine,
                 validator: Validator | None, batch: int | None, full_refresh: bool) -> None:
        self.ctx, self.compiler, self.engine, self.validator = ctx, compiler, engine, validator
        self.batch, self.full_refresh = batch, full_refresh
        self.plans: dict[str, tuple[str, Increment | None, list[str]]] = {}
        self.compiled: dict[str, Future[CompiledModel]] = {}
        # the watermark each incremental model continues from in this build (None: built whole)
        self.marks: dict[str, int | None] = {}
        self._start: BuildStart | None = None

    def compiling_ahead(self, names: list[str]) -> ThreadPoolExecutor:
        """One thread compiles every model in dependency order (Jinja and sqlglot hold the GIL,
        the warehouse does not): models are compiled while the first ones run."""
        selected = set(names)  # planned in dependency order: _continues reads upstream marks
        for n in (n for n in self.compiler.graph.order if n in selected):
            self.plans[n] = self._plan(self.compiler.models[n])
        pool = ThreadPoolExecutor(1, thread_name_prefix="arpu-compile")
        self.compiled = {n: pool.submit(self.compiler.compile, self.compiler.models[n],
                                        increment=self.plans[n][1]) for n in names}
        return pool

    def __call__(self, model: Model) -> ModelResult:
        res = self._run(model, *self.plans[model.name])
        fault_point(f"model:{model.name}")
        if res.status == "success":
            self._check_data_vars(model, res)
        if res.status == "success" and self.validator is not None:
            check(self.validator, model, res, built=True)
        return res

    def _plan(self, model: Model) -> tuple[str, Increment | None, list[str]]:
        """How `model` is written: its relation kind, its increment (incremental models, when
        the engine merges) and the statements that record its watermark in the same
        transaction. Decided before the build starts: only the model's own run changes them."""
        from runner.compile import Increment

        kind, increment, after = model.materialized, None, []
        if kind == "incremental":
            kind = "table"
            if self.batch is not None:
                mark = None if self.full_refresh else self._started().marks.get(model.name)
                active = mark is not None and model.name in self._started().present
                if active and model.config.incremental_strategy == "delete+insert":
                    active = self._continues(model, mark)
                self.marks[model.name] = mark if active else None
                increment = Increment(active, mark or 0, self.batch)
                after = self.engine.watermark_statements(model.name, self.batch)
        return kind, increment, after

    def _continues(self, model: Model, mark: int | None) -> bool:
        """A delete+insert model continues from its watermark when it reads what changed since
        then: every incremental model upstream continues from the same watermark in this build
        (or is not run and has it), so that the rows they rewrite (`updated_load`) and what
        those rows were (`previous_user_key`) are the changes since the model's own state; and
        its vars are the ones its state was built with."""
        if not self.engine.supports_delete_insert:
            return False
        for name in self.compiler.graph.ancestors(model.name):
            if self.compiler.models[name].materialized != "incremental":
                continue
            upstream = self.marks[name] if name in self.marks else self._started().marks.get(name)
            if upstream != mark:
                return False
        return self._built_with_these_vars(model.name)

    def _built_with_these_vars(self, name: str) -> bool:
        now = vars_text(self.ctx.config.vars.model_dump(mode="json"))
        return self._started().vars.get(name) == now

    def _started(self) -> BuildStart:
        """What the build starts from, read once, when the first model is planned (every plan
        is made before any model runs)."""
        if self._start is None:
            present = set(self.engine.existing([*self.compiler.graph.order, BUILD_INFO]))
            vars: dict[str, str] = {}
            if BUILD_INFO in present:
                vars = dict(self.engine.fetch(self.ctx.sql_for_target(
                    f"select model, vars from {self.compiler.relation(BUILD_INFO)}"))[1])
            self._start = BuildStart(self.engine.watermarks(), vars, present)
        return self._start

    def _run(self, model: Model, kind: str, increment: Increment | None, after: list[str]
             ) -> ModelResult:
        t0 = time.perf_counter()
        res = ModelResult(model.name, "success", materialized=model.materialized)
        try:
            compiled = self.compiled[model.name].result()  # a compile error raises here
            res.compiled_path = str(compiled.path.relative_to(self.ctx.project_dir))
            if compiled.touched_sql is not None:
                res.rows = self.engine.delete_insert(
                    model.name, compiled.sql, compiled.touched_sql,
                    model.config.touched_by or model.config.unique_key, after)
            elif increment is not None and increment.active:
                res.rows = self.engine.merge(model.name, compiled.sql, model.config.unique_key,
                                             after)
            else:
                res.rows = self.engine.materialize(model.name, compiled.sql, kind, after)
        except ArpuError as exc:
            res.status, res.error = "error", str(exc)
        except Exception as exc:  # the warehouse's own error: keep the model and file with it
            first = str(exc).splitlines()[0] if str(exc) else ""
            error = ExecutionError(f"{type(exc).__name__}: {first}", model=model.name,
                                   compiled_path=res.compiled_path)
            res.status, res.error = "error", str(error)
        res.seconds = round(time.perf_counter() - t0, 4)
        return res

    def _check_data_vars(self, model: Model, res: ModelResult) -> None:
        """A var that names a value of the data (DATA_VARS) fails the model that first holds
        those values when the data does not have it, naming the ones it has."""
        if model.name not in DATA_VARS:
            return
        var, column, plural = DATA_VARS[model.name]
        value = getattr(self.ctx.config.vars, var)
        if value is None:
            return
        sql = (f"select distinct {column} from {self.compiler.relation(model.name)} "
               f"where {column} is not null order by 1")
        have = [str(row[0]) for row in self.engine.fetch(self.ctx.sql_for_target(sql))[1]]
        if value not in have:
            shown = ", ".join(repr(v) for v in have[:20]) + (
                f" and {len(have) - 20} more" if len(have) > 20 else "")
            res.status = "error"
            res.error = (f"var {var}: {value!r} is not in the data; its {plural}: "
                         f"{shown or 'none'}")


def test(ctx: BuildContext, select: list[str] | None, listener: Listener, exclude: list[str] | None,
         fail_fast: bool, started: float) -> BuildResult:
    """Validate the selected published relations one by one, without building (`arpu test`);
    a failure skips nothing but, with `fail_fast`, every relation after it."""
    compiler = ctx.compiler()
    names = compiler.graph.select(select, exclude)
    result = BuildResult(target=ctx.target_name, validated=True)
    validator = open_validator(ctx, names, published=True)
    try:
        for name in names:
            model = compiler.models[name]
            failed = [r.model for r in result.results if r.status == "error"]
            if fail_fast and failed:
                res = ModelResult(name, "skipped", materialized=model.materialized,
                                  error=f"--fail-fast: {', '.join(failed)} failed")
            else:
                listener(ModelStarted(name))
                res = ModelResult(name, "success", materialized=model.materialized)
                check(validator, model, res)
            result.results.append(res)
            listener(ModelFinished(res))
    finally:
        validator.close()
    result.validation_seconds = sum(r.validation_seconds for r in result.results)
    result.seconds = time.perf_counter() - started
    ctx.write_results(result)
    return result


def open_validator(ctx: BuildContext, names: list[str], fast: bool = False, published: bool = False
                   ) -> Validator:
    """The validator of a build (`fast`: the plain-SQL pre-check first) or of `arpu test`
    (`published`: it reads what BI tools read). Bad declarations fail here, before anything
    is built."""
    from runner.quality.validator import Validator

    compiler = ctx.compiler()
    engine = ctx.reader() if published else ctx.engine()
    relation = compiler.published_relation if published else compiler.relation
    validator = Validator(ctx.project_dir, engine, relation, ctx.config.vars.model_dump(),
                          graph=compiler.graph,
                          macros_dir=ctx.project_dir / ctx.config.macros_path, fast=fast)
    try:
        for name in names:
            validator.suite_for(compiler.models[name])
    except BaseException:
        validator.close()
        raise
    return validator


def check(validator: Validator, model: Model, res: ModelResult, built: bool = False) -> None:
    """Validate `model` (`built`: just written by this build) and record its expectations in
    `res`; an `error` expectation that fails makes the model fail."""
    t0 = time.perf_counter()
    outcomes = validator.validate(model, built)
    res.validation_seconds = round(time.perf_counter() - t0, 4)
    res.expectations = [
        {"expectation": o.expectation, "severity": o.severity, "success": o.success,
         "observed": o.observed, "failing_examples": o.failing_examples,
         "exception": o.exception}
        for o in outcomes
    ]
    failed = [o for o in outcomes if o.is_error]
    if failed:
        res.status = "error"
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        res.error = (f"expectation failed on {model.name}: {first.expectation}, "
                     f"observed {first.observed}{more}")
