"""The programmatic runner: one Context per project and target, the facade the CLI and tests
call. It holds the config and the connections; the work lives in runner/build.py (build, test),
runner/scheduler.py (which model runs when) and runner/sources.py (raw tables, the sample)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.artifacts import BUILD_INFO, BuildResult, Shown, write_manifest, write_results
from runner.config import Config, load_config
from runner.errors import ArpuError, ConfigError
from runner.events import Listener, ignore
from runner.sources import RawSources

if TYPE_CHECKING:
    from runner.compile import CompiledModel, Compiler
    from runner.config import Target
    from runner.engines.base import Engine
    from runner.ingest import IngestResult
    from runner.project import Model


class Context:
    """Everything a command needs: config, models, the compiler and the target's connection,
    each made on first use (a command that only reads never compiles)."""

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
        self._models: dict[str, Model] | None = None
        self._engine: Engine | None = None
        self._reader: Engine | None = None
        self.sources = RawSources(self.engine, self.config.source,
                                  self.project_dir / self.config.seed_path, self.project_dir)

    @property
    def target_dir(self) -> Path:
        return self.project_dir / "target"

    @property
    def target(self) -> Target:
        """The chosen target's config: its type, where it builds and publishes."""
        return self.config.targets[self.target_name]

    def compiler(self, target: str | None = None) -> Compiler:
        from runner.compile import Compiler

        name = target or self.target_name
        if name not in self._compilers:
            self._compilers[name] = Compiler(self.project_dir, self.config, name)
            self._compilers[name].graph.root = self.project_dir  # for path: selectors
        return self._compilers[name]

    def models(self) -> dict[str, Model]:
        """The project's models as their files declare them, without rendering any (their
        dependencies are the compiler's: `compiler().models`)."""
        if self.target_name in self._compilers:
            return self._compilers[self.target_name].models
        if self._models is None:
            from runner.project import load_models

            self._models = load_models(self.project_dir / self.config.models_path)
        return self._models

    def engine(self) -> Engine:
        """Where arpu ingests and builds."""
        if self._engine is None:
            from runner.engines import connect

            self._engine = connect(self.project_dir, self.config, self.target_name)
        return self._engine

    def reader(self) -> Engine:
        """What BI tools read: the published relations (DuckDB: the published file;
        PostgreSQL: the target's schema; ClickHouse: the target's database)."""
        if not self.target.reads_published_apart:
            return self.engine()
        if self._reader is None:
            from runner.engines import connect

            self._reader = connect(self.project_dir, self.config, self.target_name,
                                   published=True)
        return self._reader

    def close_reader(self) -> None:
        """Let go of the published relations (a build is about to replace them)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

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
        """Load message files into the target's raw tables (runner/sources.py): loading
        other files removes the bundled sample (`sample_removed`), `sample=True` replaces it."""
        return self.sources.ingest(paths, progress, sample)

    @property
    def sample_removed(self) -> int:
        """Messages of the bundled sample the last ingest removed."""
        return self.sources.sample_removed

    @property
    def unfinished_discarded(self) -> int:
        """Rows of an ingest that never finished, removed by this command."""
        return self.sources.unfinished_discarded

    def discard_unfinished_loads(self) -> int:
        """Remove the rows of an ingest that was stopped before it recorded its load."""
        return self.sources.discard_unfinished_loads()

    def ensure_sources(self) -> IngestResult | None:
        """Create the raw tables and drop what an unfinished ingest left; on a fresh project
        with nothing ingested, load the sample."""
        return self.sources.ensure()

    def build(
        self,
        select: list[str] | None = None,
        on_event: Listener = ignore,
        validate: bool = True,
        full_refresh: bool = False,
        exclude: list[str] | None = None,
        fail_fast: bool = False,
    ) -> BuildResult:
        """Compile, then run the selected models in dependency order, validating each right
        after it is built; a failed model or `error` expectation skips everything downstream
        (`fail_fast`: every model not started yet). `on_event` hears runner/events.py's
        events as they happen."""
        from runner import build
        from runner.metrics.query import semantic_layer

        started = time.perf_counter()
        with self.recording_results(validate, started):
            # metrics/ is read first, as dbt parses a project before it runs anything: a broken
            # file stops the build before any model (the saved queries' exports need it after)
            semantic_layer(self)
            return build.build(self, select, on_event, validate, full_refresh, exclude,
                               fail_fast, started)

    def test(self, select: list[str] | None = None, on_event: Listener = ignore,
             exclude: list[str] | None = None, fail_fast: bool = False) -> BuildResult:
        """Validate what is in the warehouse now, without building (`arpu test`)."""
        from runner import build

        started = time.perf_counter()
        with self.recording_results(True, started):
            return build.test(self, select, on_event, exclude, fail_fast, started)

    @contextmanager
    def recording_results(self, validate: bool = True, started: float | None = None
                          ) -> Iterator[None]:
        """Around a whole build or test command: first replace the last run_results.json and
        junit.xml (a build that stops half-way must not leave a green one behind), and when
        the command stops with an exception (a compile error, a broken expectation file,
        Ctrl-C), record why."""
        started = time.perf_counter() if started is None else started
        self.write_results(BuildResult(target=self.target_name, validated=validate,
                                       error="the build is running, or was killed"))
        try:
            yield
        except BaseException as exc:
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
                str(exc) or type(exc).__name__)
            self.write_results(BuildResult(target=self.target_name, validated=validate,
                                           seconds=time.perf_counter() - started,
                                           error=f"the build stopped: {why}"))
            raise

    def write_results(self, result: BuildResult) -> None:
        """target/run_results.json and target/junit.xml for `result`."""
        write_results(self.target_dir, result, self.target.dialect)

    # what `arpu show` orders tables by that are not models (models: their unique_key)
    SHOW_KEYS = {"raw_events": ["load_id", "record_number"],
                 "raw_rejected": ["load_id", "line_number"], "raw_loads": ["load_id"],
                 BUILD_INFO: ["model"]}

    def show(self, name: str, limit: int = 20) -> Shown:
        """The first `limit` rows of a relation, ordered by its key (a model's `unique_key`,
        a raw table's load and line), with its row count and its JSON-typed columns."""
        models = self.models()
        if name not in models and name not in self.SHOW_KEYS:
            raise ConfigError(f"no model named '{name}' (see `arpu ls`)", location="arpu show")
        if limit < 0:
            raise ConfigError(f"must be 0 or more, not {limit}", location="--limit")
        engine = self._reader_for(name)
        if not engine.relation_exists(name):
            raise ArpuError(f"'{name}' has not been built yet: run `arpu build`")
        relation = self.relation(name)
        keys = self.SHOW_KEYS.get(name) or models[name].config.unique_key
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

    def relation(self, name: str) -> str:
        """Where a reader finds `name`, quoted: raw tables where arpu works, models where
        they are published. From the target's config: no compiler is needed to name one."""
        return self.target.relation(name, published=not name.startswith("raw_"))

    def _reader_for(self, name: str) -> Engine:
        """Raw tables live where arpu works; models are read where they are published."""
        return self.engine() if name.startswith("raw_") else self.reader()

    def sql_for_target(self, sql: str) -> str:
        """A query written in the models' dialect (DuckDB), for the target's engine."""
        from runner.dialect import transpile

        return transpile(sql, self.target.dialect)

    def rows(self, name: str, order_by: str | None = None) -> list[dict[str, Any]]:
        """Every row of a relation as dicts (tests and exports)."""
        engine = self._reader_for(name)
        sql = f"select * from {self.relation(name)}" + (f" order by {order_by}"
                                                         if order_by else "")
        columns, rows = engine.fetch(self.sql_for_target(sql))
        return [dict(zip(columns, row, strict=True)) for row in rows]
