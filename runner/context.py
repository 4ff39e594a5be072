"""The programmatic runner: one Context per project and target; the CLI and tests call it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.artifacts import (
    BUILD_INFO,
    BuildResult,
    ModelResult,
    Shown,
    record_build,
    write_manifest,
    write_run_results,
)
from runner.config import Config, load_config
from runner.engines.base import SAMPLE_LOADS
from runner.errors import ArpuError, ConfigError, ExecutionError
from runner.faults import fault_point

if TYPE_CHECKING:
    from concurrent.futures import Future

    from runner.compile import CompiledModel, Compiler, Increment
    from runner.engines.base import Engine
    from runner.ingest import IngestResult
    from runner.project import Model
    from runner.quality.validator import Validator

Callback = Callable[[str, str, Any], None]

# Vars that name a value of the data: the model that holds those values, its column, what
# they are called. A value the data does not have fails that model (and skips its dependents).
DATA_VARS = {
    "category_opportunities": ("target_category", "category", "categories"),
    "experiment_results": ("control_variant", "variant", "variants"),
}


class Context:
    """Everything a command needs: config, models, the compiler and the target's connection."""

    def __init__(
        self,
        project_dir: Path | str = ".",
        target: str | None = None,
        vars: dict[str, Any] | None = None,
    ) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.config: Config = load_config(self.project_dir, vars)
        self.var_overrides: dict[str, Any] = dict(vars or {})  # --vars, as given
        self.target_name = target or self.config.target
        if self.target_name not in self.config.targets:
            raise ConfigError(
                f"unknown target '{self.target_name}' "
                f"(defined: {', '.join(self.config.targets)})",
                location="--target",
            )
        self._compilers: dict[str, Compiler] = {}
        self._engine: Engine | None = None
        self._reader: Engine | None = None

    @property
    def target_dir(self) -> Path:
        return self.project_dir / "target"

    def compiler(self, target: str | None = None) -> Compiler:
        from runner.compile import Compiler

        name = target or self.target_name
        if name not in self._compilers:
            self._compilers[name] = Compiler(self.project_dir, self.config, name)
            self._compilers[name].graph.root = self.project_dir  # for path: selectors
        return self._compilers[name]

    def engine(self) -> Engine:
        """Where arpu ingests and builds."""
        if self._engine is None:
            from runner.engines import connect

            self._engine = connect(self.project_dir, self.config, self.target_name)
        return self._engine

    def reader(self) -> Engine:
        """What BI tools read: the published relations (DuckDB: the published file;
        PostgreSQL: the target's schema; ClickHouse: the target's database)."""
        if not self.config.targets[self.target_name].reads_published_apart:
            return self.engine()
        if self._reader is None:
            from runner.engines import connect

            self._reader = connect(self.project_dir, self.config, self.target_name,
                                   published=True)
        return self._reader

    def close(self) -> None:
        for engine in (self._engine, self._reader):
            if engine is not None:
                engine.close()
        self._engine = self._reader = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------
    def ls(self, select: list[str] | None = None, exclude: list[str] | None = None
           ) -> list[Model]:
        compiler = self.compiler()
        return [compiler.models[n] for n in compiler.graph.select(select, exclude)]

    def compile(
        self, target: str | None = None, select: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> list[CompiledModel]:
        compiler = self.compiler(target)
        compiled = [compiler.compile(compiler.models[n])
                    for n in compiler.graph.select(select, exclude)]
        write_manifest(self.target_dir, compiler)
        return compiled

    def ingest(self, paths: list[str | Path], progress: Callable[[int], None] | None = None,
               sample: bool = False) -> IngestResult:
        """Load message files into the target's raw tables. DuckDB validates and types them
        in bulk; for another target the result is copied over in one transaction per load.
        Paths are taken as given (relative to the caller's working directory).

        The bundled sample never mixes with a user's data: loading other files removes the
        sample's loads (`sample_removed` says how many messages), and loading a sample
        (`sample=True`: the fresh build's auto-load, `arpu seed`) replaces the previous one."""
        import duckdb

        from runner.ingest import Loader, expand_paths

        files = expand_paths(list(paths))
        engine = self.engine()
        engine.ensure_raw_tables()
        self.discard_unfinished_loads()
        before = int(engine.scalar("select coalesce(max(load_id), 0) from raw_loads"))
        if engine.ingests_in_place:
            result = Loader(engine.con).load(files, progress)  # type: ignore[attr-defined]
        else:
            local = duckdb.connect()
            try:
                result = Loader(local).load(files, progress)
                engine.append_raw(local, before)
            finally:
                local.close()
        self.sample_removed = self._remove_sample(engine, before)
        if sample:
            engine.execute(f"insert into {SAMPLE_LOADS} select load_id, false from raw_loads "
                           f"where load_id > {before}")
        return result

    sample_removed = 0  # messages of the bundled sample the last ingest removed

    @staticmethod
    def _remove_sample(engine: Engine, before: int) -> int:
        """Remove the sample's loads up to load `before`; they stay marked `removed` so that
        the next build rebuilds its incremental models without them."""
        loads = [int(r[0]) for r in engine.fetch(
            f"select load_id from {SAMPLE_LOADS} where not removed and load_id <= {before}")[1]]
        if not loads:
            return 0
        ids = ", ".join(map(str, loads))
        messages = int(engine.scalar(
            f"select coalesce(sum(loaded), 0) from raw_loads where load_id in ({ids})"))
        engine.remove_loads(loads)
        engine.delete_where(SAMPLE_LOADS, f"load_id in ({ids})")
        engine.execute(f"insert into {SAMPLE_LOADS} "
                       f"select load_id, true from (values {', '.join(f'({i})' for i in loads)})"
                       " as removed(load_id)")
        return messages

    unfinished_discarded = 0  # rows of an ingest that never finished, removed by this command

    def discard_unfinished_loads(self) -> int:
        """Remove the rows of loads that were never recorded in raw_loads (an ingest killed
        half-way: it commits chunk by chunk and records the load at the end). Models read
        recorded loads only, so this changes no output; it keeps the raw tables clean."""
        engine = self.engine()
        # a load's id is the largest so far, and it is recorded last: unrecorded rows are those
        # above the newest recorded load. A literal bound lets the engine skip row groups, where
        # `not in (select ...)` scanned all raw data twice on every build
        newest = int(engine.scalar("select coalesce(max(load_id), 0) from raw_loads"))
        condition = f"load_id > {newest}"
        rows = sum(int(engine.scalar(f"select count(*) from {table} where {condition}"))
                   for table in ("raw_events", "raw_rejected"))
        if rows:
            for table in ("raw_events", "raw_rejected"):
                engine.delete_where(table, condition)
        self.unfinished_discarded += rows
        return rows

    def ensure_sources(self) -> IngestResult | None:
        """Create the raw tables and drop what an unfinished ingest left; on a fresh project
        with nothing ingested, load the sample."""
        if self.config.source.format != "messages":
            return None
        engine = self.engine()
        engine.ensure_raw_tables()
        self.discard_unfinished_loads()
        if engine.scalar("select count(*) from raw_loads"):
            return None
        sample = self.project_dir / self.config.seed_path
        if not sample.exists():
            return None
        return self.ingest([sample], sample=True)

    def build(
        self,
        select: list[str] | None = None,
        on_event: Callback | None = None,
        validate: bool = True,
        full_refresh: bool = False,
        exclude: list[str] | None = None,
        fail_fast: bool = False,
    ) -> BuildResult:
        """Compile, then run the selected models in dependency order, validating each right
        after it is built; a failed model or `error` expectation skips everything downstream
        (`fail_fast`: every model not started yet)."""
        started = time.perf_counter()
        with self.recording_results(validate, started):
            return self._build(select, on_event, validate, full_refresh, started,
                               exclude=exclude, fail_fast=fail_fast)

    @contextmanager
    def recording_results(self, validate: bool = True, started: float | None = None
                          ) -> Iterator[None]:
        """Around a whole build or test command: first replace the last run_results.json and
        junit.xml (a build that stops half-way must not leave a green one behind), and when
        the command stops with an exception (a compile error, a broken expectation file,
        Ctrl-C), record why."""
        started = time.perf_counter() if started is None else started
        self._write_results(BuildResult(target=self.target_name, validated=validate,
                                        error="the build is running, or was killed"))
        try:
            yield
        except BaseException as exc:
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
                str(exc) or type(exc).__name__)
            self._write_results(BuildResult(target=self.target_name, validated=validate,
                                            seconds=time.perf_counter() - started,
                                            error=f"the build stopped: {why}"))
            raise

    def _build(self, select: list[str] | None, on_event: Callback | None, validate: bool,
               full_refresh: bool, started: float, exclude: list[str] | None = None,
               fail_fast: bool = False) -> BuildResult:
        notify = on_event or (lambda *_: None)
        from concurrent.futures import ThreadPoolExecutor

        # a fresh project loads the sample (DuckDB's work, off the GIL) while Python compiles
        with ThreadPoolExecutor(1, thread_name_prefix="arpu-compile") as pool:
            compiling = pool.submit(self.compiler)
            seeded = self.ensure_sources()
            compiler = compiling.result()
        names = compiler.graph.select(select, exclude)
        result = BuildResult(target=self.target_name, validated=validate)
        if seeded is not None:
            result.seeded = True
            notify("seeded", str(self.config.seed_path), seeded)
        if self.unfinished_discarded:
            notify("discarded", "raw_events", self.unfinished_discarded)
        engine = self.engine()
        write_manifest(self.target_dir, compiler)
        validator = self._validator(names, fast=True) if validate else None
        batch = self._batch_load_id(engine)
        # loads were removed (the sample, when a user's data arrived): nothing incremental
        # may continue from relations that still hold them
        removed = self._removed_loads_pending(engine)
        full_refresh = full_refresh or removed
        published = False
        self._close_reader()  # the build attaches the published file, then renames over it
        try:
            engine.begin_build(
                carry=[n for n in compiler.graph.order if n not in names] + [BUILD_INFO],
                incremental=[] if full_refresh or batch is None else
                [n for n in names if compiler.models[n].materialized == "incremental"])
            for res in self._run_models(compiler, engine, names, validator, batch,
                                        full_refresh, notify, fail_fast):
                result.results.append(res)
            order = {name: i for i, name in enumerate(names)}
            result.results.sort(key=lambda r: order[r.model])
            if validator is not None:
                validator.close()
                validator = None
            result.validation_seconds = sum(r.validation_seconds for r in result.results)
            if engine.relation_exists("stg_events") and engine.relation_exists("raw_events"):
                raw = int(engine.scalar("select count(*) from raw_events"))
                kept = int(engine.scalar("select count(*) from stg_events"))
                result.messages_loaded, result.duplicates_removed = raw, raw - kept
            exported: list[str] = []
            if result.success:  # saved queries' exports (metrics/*.yml), published with them
                from runner.metrics.exports import build_exports

                exported = build_exports(self, engine, compiler.relation, notify, result)
            if result.success:
                t0 = time.perf_counter()
                engine.publish(record_build(
                    engine, compiler.relation, [*names, *exported],
                    [n for n in compiler.graph.order if engine.relation_exists(n)] + exported,
                    self.config.vars.model_dump(mode="json")))
                published = True
                if removed and set(names) == set(compiler.graph.order):
                    engine.delete_where(SAMPLE_LOADS, "removed")
                result.publish_seconds = time.perf_counter() - t0
        finally:
            if validator is not None:
                validator.close()
            if not published:
                engine.abandon_build()
        result.seconds = time.perf_counter() - started
        self._write_results(result)
        return result

    def _run_models(self, compiler: Compiler, engine: Engine, names: list[str],
                    validator: Validator | None, batch: int | None, full_refresh: bool,
                    notify: Callback, fail_fast: bool = False) -> Iterator[ModelResult]:
        """Build and validate `names`, each once its parents are done, up to the engine's
        `concurrency` at once (models that do not depend on each other overlap); a failed model
        or `error` expectation skips everything downstream, and with `fail_fast` every model
        not started yet (those running finish). Results in completion order."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        parents = {n: set(compiler.models[n].depends_on) & set(names) for n in names}
        waiting = list(names)  # in dependency order
        finished: set[str] = set()
        failed: set[str] = set()  # models that failed; their descendants are skipped

        plans = {n: self._plan(engine, compiler.models[n], batch, full_refresh) for n in names}

        def run(model: Model) -> ModelResult:
            res = self._run_model(engine, model, compiled[model.name], *plans[model.name])
            fault_point(f"model:{model.name}")
            if res.status == "success":
                self._check_data_vars(engine, compiler, model, res)
            if res.status == "success" and validator is not None:
                self._check(validator, model, res)
            return res

        workers = max(1, engine.concurrency)
        # One thread compiles every model in dependency order (Jinja and sqlglot hold the GIL,
        # the warehouse does not): models are compiled while the first ones run.
        with ThreadPoolExecutor(1, thread_name_prefix="arpu-compile") as compile_pool, \
                ThreadPoolExecutor(workers, thread_name_prefix="arpu-model") as pool:
            compiled = {n: compile_pool.submit(compiler.compile, compiler.models[n],
                                               increment=plans[n][1]) for n in names}
            running: dict[Future[ModelResult], str] = {}
            while waiting or running:
                for name in [n for n in waiting if parents[n] <= finished]:
                    if len(running) >= workers:
                        break
                    waiting.remove(name)
                    model = compiler.models[name]
                    upstream_failed = failed & compiler.graph.ancestors(name)
                    if upstream_failed or (fail_fast and failed):
                        why = (f"upstream failed: {', '.join(sorted(upstream_failed))}"
                               if upstream_failed else
                               f"--fail-fast: {', '.join(sorted(failed))} failed")
                        res = ModelResult(name, "skipped", materialized=model.materialized,
                                          error=why)
                        finished.add(name)
                        notify("done", name, res)
                        yield res
                        continue
                    notify("start", name, None)
                    running[pool.submit(run, model)] = name
                if not running:
                    continue  # skipped models may have made others ready
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    res = future.result()
                    if res.status != "success":
                        failed.add(name)
                    finished.add(name)
                    notify("done", name, res)
                    yield res

    def test(self, select: list[str] | None = None, on_event: Callback | None = None,
             exclude: list[str] | None = None, fail_fast: bool = False) -> BuildResult:
        """Validate what is in the warehouse now, without building (`arpu test`)."""
        started = time.perf_counter()
        with self.recording_results(True, started):
            return self._test(select, on_event, started, exclude, fail_fast)

    def _test(self, select: list[str] | None, on_event: Callback | None, started: float,
              exclude: list[str] | None = None, fail_fast: bool = False) -> BuildResult:
        notify = on_event or (lambda *_: None)
        compiler = self.compiler()
        names = compiler.graph.select(select, exclude)
        result = BuildResult(target=self.target_name, validated=True)
        validator = self._validator(names, published=True)
        try:
            for name in names:
                model = compiler.models[name]
                failed = [r.model for r in result.results if r.status == "error"]
                if fail_fast and failed:
                    res = ModelResult(name, "skipped", materialized=model.materialized,
                                      error=f"--fail-fast: {', '.join(failed)} failed")
                    result.results.append(res)
                    notify("done", name, res)
                    continue
                notify("start", name, None)
                res = ModelResult(name, "success", materialized=model.materialized)
                self._check(validator, model, res)
                result.results.append(res)
                notify("done", name, res)
        finally:
            validator.close()
        result.validation_seconds = sum(r.validation_seconds for r in result.results)
        result.seconds = time.perf_counter() - started
        self._write_results(result)
        return result

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _validator(self, names: list[str], fast: bool = False, published: bool = False
                   ) -> Validator:
        from runner.quality.validator import Validator

        compiler = self.compiler()
        engine = self.reader() if published else self.engine()
        relation = compiler.published_relation if published else compiler.relation
        validator = Validator(self.project_dir, engine, relation,
                              self.config.vars.model_dump(), graph=compiler.graph,
                              macros_dir=self.project_dir / self.config.macros_path, fast=fast)
        try:
            for name in names:  # bad declarations fail before anything is built
                validator.suite_for(compiler.models[name])
        except BaseException:
            validator.close()
            raise
        return validator

    def _check_data_vars(self, engine: Engine, compiler: Compiler, model: Model,
                         res: ModelResult) -> None:
        """A var that names a value of the data (DATA_VARS) fails the model that first holds
        those values when the data does not have it, naming the ones it has."""
        if model.name not in DATA_VARS:
            return
        var, column, plural = DATA_VARS[model.name]
        value = getattr(self.config.vars, var)
        if value is None:
            return
        sql = (f"select distinct {column} from {compiler.relation(model.name)} "
               f"where {column} is not null order by 1")
        have = [str(row[0]) for row in engine.fetch(self.sql_for_target(sql))[1]]
        if value not in have:
            shown = ", ".join(repr(v) for v in have[:20]) + (
                f" and {len(have) - 20} more" if len(have) > 20 else "")
            res.status = "error"
            res.error = (f"var {var}: {value!r} is not in the data; its {plural}: "
                         f"{shown or 'none'}")

    @staticmethod
    def _check(validator: Validator, model: Model, res: ModelResult) -> None:
        t0 = time.perf_counter()
        outcomes = validator.validate(model)
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

    def _write_results(self, result: BuildResult) -> None:
        """run_results.json and junit.xml, both replaced by every build and test run (a build
        without validation writes a junit.xml without expectations)."""
        from runner.compile import DIALECTS
        from runner.quality.junit import write_junit
        from runner.quality.spec import ExpectationResult

        dialect = DIALECTS[self.config.targets[self.target_name].type]
        write_run_results(self.target_dir, result, dialect)
        cases = [
            ExpectationResult(r.model, e["expectation"], e["severity"], e["success"],
                              e["observed"], e["failing_examples"],
                              r.validation_seconds / max(len(r.expectations), 1),
                              e["exception"])
            for r in result.results for e in r.expectations
        ]
        if result.error is not None:  # CI sees a failed build, not a missing test
            cases.append(ExpectationResult("build", "build completed", "error", False,
                                           result.error, exception=result.error))
        write_junit(self.target_dir / "junit.xml", cases)

    def _removed_loads_pending(self, engine: Engine) -> bool:
        if self.config.source.format != "messages" or not engine.relation_exists(SAMPLE_LOADS):
            return False
        return bool(engine.scalar(f"select count(*) from {SAMPLE_LOADS} where removed"))

    def _batch_load_id(self, engine: Engine) -> int | None:
        """The last load this build processes; None when loads are not tracked (Segment's
        warehouse tables, Spark), where incremental models are built whole."""
        if self.config.source.format != "messages" or not engine.supports_merge:
            return None
        if not engine.relation_exists("raw_loads"):
            return None
        return int(engine.scalar("select coalesce(max(load_id), 0) from raw_loads"))

    @staticmethod
    def _plan(engine: Engine, model: Model, batch: int | None, full_refresh: bool
              ) -> tuple[str, Increment | None, list[str]]:
        """How `model` is written: its relation kind, its increment (incremental models, when
        the engine merges) and the statements that record its watermark in the same
        transaction. Decided before the build starts: only the model's own run changes them."""
        from runner.compile import Increment

        kind, increment, after = model.materialized, None, []
        if kind == "incremental":
            kind = "table"
            if batch is not None:
                mark = None if full_refresh else engine.watermark(model.name)
                active = mark is not None and engine.relation_exists(model.name)
                increment = Increment(active, mark or 0, batch)
                after = engine.watermark_statements(model.name, batch)
        return kind, increment, after

    def _run_model(self, engine: Engine, model: Model, compiling: Future[CompiledModel],
                   kind: str, increment: Increment | None, after: list[str]) -> ModelResult:
        t0 = time.perf_counter()
        res = ModelResult(model.name, "success", materialized=model.materialized)
        try:
            compiled = compiling.result()  # a compile error raises here, as the model's error
            res.compiled_path = str(compiled.path.relative_to(self.project_dir))
            if increment is not None and increment.active:
                res.rows = engine.merge(model.name, compiled.sql, model.config.unique_key,
                                        after)
            else:
                res.rows = engine.materialize(model.name, compiled.sql, kind, after)
        except ArpuError as exc:
            res.status, res.error = "error", str(exc)
        except Exception as exc:  # the warehouse's own error: keep the model and file with it
            first = str(exc).splitlines()[0] if str(exc) else ""
            error = ExecutionError(f"{type(exc).__name__}: {first}", model=model.name,
                                   compiled_path=res.compiled_path)
            res.status, res.error = "error", str(error)
        res.seconds = round(time.perf_counter() - t0, 4)
        return res

    # what `arpu show` orders tables by that are not models (models: their unique_key)
    SHOW_KEYS = {"raw_events": ["load_id", "record_number"],
                 "raw_rejected": ["load_id", "line_number"], "raw_loads": ["load_id"],
                 BUILD_INFO: ["model"]}

    def show(self, name: str, limit: int = 20) -> Shown:
        """The first `limit` rows of a relation, ordered by its key (a model's `unique_key`,
        a raw table's load and line), with its row count and its JSON-typed columns."""
        compiler = self.compiler()
        if name not in compiler.models and name not in self.SHOW_KEYS:
            raise ConfigError(f"no model named '{name}' (see `arpu ls`)", location="arpu show")
        if limit < 0:
            raise ConfigError(f"must be 0 or more, not {limit}", location="--limit")
        engine = self._reader_for(name)
        if not engine.relation_exists(name):
            raise ArpuError(f"'{name}' has not been built yet: run `arpu build`")
        relation = self._read_relation(name)
        keys = self.SHOW_KEYS.get(name) or compiler.models[name].config.unique_key
        order = " order by " + ", ".join(f'"{k}"' for k in keys) if keys else ""
        columns, rows = engine.fetch(self.sql_for_target(
            f"select * from {relation}{order} limit {int(limit)}"))
        total = len(rows) if len(rows) < limit else int(engine.scalar(
            self.sql_for_target(f"select count(*) from {relation}")))
        try:
            _, typed = engine.fetch(
                "select column_name from information_schema.columns where table_name = ? "
                "and upper(data_type) in ('JSON', 'JSONB')", [name])
        except Exception:  # no information_schema (Spark, whose JSON is text anyway)
            typed = []
        return Shown(name, columns, rows, total, keys, {str(r[0]) for r in typed})

    def _read_relation(self, name: str) -> str:
        compiler = self.compiler()
        return compiler.relation(name) if name.startswith("raw_") else \
            compiler.published_relation(name)

    def _reader_for(self, name: str) -> Engine:
        """Raw tables live where arpu works; models are read where they are published."""
        return self.engine() if name.startswith("raw_") else self.reader()

    def sql_for_target(self, sql: str) -> str:
        """A query written in the models' dialect (DuckDB), for the target's engine."""
        from runner.dialect import transpile

        return transpile(sql, self.compiler().target.dialect)

    def rows(self, name: str, order_by: str | None = None) -> list[dict[str, Any]]:
        """Every row of a relation as dicts (tests and exports)."""
        engine = self._reader_for(name)
        relation = self._read_relation(name)
        sql = f"select * from {relation}" + (f" order by {order_by}" if order_by else "")
        columns, rows = engine.fetch(self.sql_for_target(sql))
        return [dict(zip(columns, row, strict=True)) for row in rows]
