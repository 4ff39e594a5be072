"""The data-quality gate: a Great Expectations 1.x suite per model, evaluated in the warehouse.

Where expectations come from, in this order (a later one with the same name replaces an earlier
one, so a file can change the severity of a default):

1. project-wide defaults: the model's `unique_key` (header) is not null and unique; a compound key
   uses `expect_compound_columns_to_be_unique`;
2. `expectations:` in the model's SQL header;
3. `models/<layer>/<model>.yml` beside `<model>.sql`:

   ```yaml
   expectations:
     - type: expect_column_values_to_be_between    # any GX 1.x expectation, snake_case
       column: [arpu, arppu]                       # a list of columns expands to one per column
       min_value: 0
       severity: warn                              # error (default) | warn
     - type: unexpected_rows                       # GX UnexpectedRowsExpectation: the query
       description: sum(product_count) = count(fct_product_purchases)   # returns the bad rows
       query: |
         select ... from {{ this }} ... {{ ref('fct_product_purchases') }} ... {{ in_range('x') }}
       requires: [raw_loads]                       # skipped when one of these does not exist
   ```

   Queries are Jinja like models (`this`, `ref`, `source`, `var` and the project's macros), written
   in DuckDB's dialect and transpiled by sqlglot to the target's. A query may only `ref` the
   model's ancestors: anything else may not be built yet when the model is validated.

How it runs: one ephemeral GX context per Validator (one per build); GX is imported in a
background thread from the moment the Validator is made. One table asset per relation and two
passes per relation: the whole suite in BOOLEAN_ONLY format (GX bundles the aggregate metrics of
all expectations into a few queries), then, for the failed expectations only, SUMMARY (COMPLETE
for unexpected_rows) for the observed values and up to five failing rows, keyed by the unique
key. Every metric is computed by the warehouse through SQLAlchemy; only counts and a handful of
example rows come back to Python. Nothing is written to disk: no `gx/` folder, no progress bars.

Targets: DuckDB through `duckdb-engine` on cursors of the engine's own connection (`engine.con`);
PostgreSQL (and any SQLAlchemy database) when the engine exposes `sqlalchemy_url`; Spark when it
exposes `spark` (a SparkSession; GX's Spark execution engine on `spark.table(...)`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import logging
import math
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from runner.errors import ArpuError, ConfigError

if TYPE_CHECKING:
    from runner.engines.base import Engine
    from runner.project import Graph, Model

SEVERITIES = ("error", "warn")
MAX_EXAMPLES = 5
UNEXPECTED_ROWS = "unexpected_rows"
_TYPE_ALIASES = {"unexpected_rows_expectation": UNEXPECTED_ROWS}
_SOURCE_DIALECT = "duckdb"
_GX_SEVERITY = {"error": "critical", "warn": "warning"}


# -- what is checked ---------------------------------------------------------------------------
@dataclass
class ExpectationSpec:
    """One expectation of one relation, before it is handed to GX."""

    relation: str
    type: str  # a GX expectation (`expect_...`) or `unexpected_rows`
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"
    description: str = ""
    origin: str = "default"  # `default` or `<file>:<line>` where it was declared
    requires: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Human-readable and unique within a relation: `expect_column_values_to_be_unique(id)`."""
        if self.type == UNEXPECTED_ROWS:
            return f"{UNEXPECTED_ROWS}({self.description})"
        args: list[str] = []
        for key in ("column", "column_A", "column_B"):
            if key in self.kwargs:
                args.append(str(self.kwargs[key]))
        args.extend(str(c) for c in self.kwargs.get("column_list", []))
        for key, value in self.kwargs.items():
            if key not in ("column", "column_A", "column_B", "column_list"):
                args.append(f"{key}={_short(value)}")
        return f"{self.type}({', '.join(args)})"


@dataclass
class ExpectationResult:
    relation: str
    expectation: str  # ExpectationSpec.name
    severity: str  # "error" | "warn"
    success: bool
    observed: str  # observed value, human readable
    failing_examples: list[dict[str, Any]] = field(default_factory=list)  # up to 5 rows
    seconds: float = 0.0  # the relation's validation time, shared by its expectations
    exception: str | None = None  # the check itself could not run (bad SQL, missing column)

    @property
    def is_error(self) -> bool:
        """A failed `error` expectation: the model fails and its descendants are skipped."""
        return not self.success and self.severity == "error"

    @property
    def is_warning(self) -> bool:
        return not self.success and self.severity == "warn"


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


# -- where expectations are declared -----------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping (key `__line__`)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = dict(loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expectations_file(model: Model) -> Path:
    """`models/<layer>/<model>.yml`, beside the model's SQL file."""
    return model.path.with_suffix(".yml")


def _read_expectations_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          location=where) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with `expectations:`", location=str(path))
    line = data.pop("__line__", None)
    unknown = sorted(set(data) - {"expectations"})
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' (only `expectations:`)",
                          location=f"{path}:{line}" if line else str(path))
    items = data.get("expectations") or []
    if not isinstance(items, list):
        raise ConfigError("`expectations` must be a list", location=str(path))
    return items


def _without_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_without_lines(v) for v in value]
    return value


def _specs_from_items(relation: str, items: list[Any], path: Path) -> list[ExpectationSpec]:
    specs: list[ExpectationSpec] = []
    for index, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise ConfigError(f"expectation #{index + 1} must be a mapping with `type:`",
                              location=str(path))
        line = raw.get("__line__")
        item = _without_lines(raw)
        where = f"{path}:{line}" if line else str(path)
        kind = item.pop("type", None)
        if not isinstance(kind, str) or not kind:
            raise ConfigError("an expectation needs `type:` (e.g. expect_column_values_to_be_"
                              "unique, or unexpected_rows)", location=where)
        kind = _TYPE_ALIASES.get(kind, kind)
        if kind != UNEXPECTED_ROWS and not kind.startswith("expect_"):
            raise ConfigError(f"'{kind}' is not a Great Expectations expectation "
                              "(expect_...) or unexpected_rows", location=where)
        severity = item.pop("severity", "error")
        if severity not in SEVERITIES:
            raise ConfigError(f"severity must be error or warn, not '{severity}'",
                              location=where)
        description = str(item.pop("description", "") or "")
        requires = item.pop("requires", []) or []
        if isinstance(requires, str):
            requires = [requires]
        if kind == UNEXPECTED_ROWS:
            query = item.pop("query", None) or item.pop("unexpected_rows_query", None)
            if not isinstance(query, str) or not query.strip():
                raise ConfigError("unexpected_rows needs `query:` (SQL returning the rows that "
                                  "violate the expectation)", location=where)
            if item:
                raise ConfigError(f"unexpected_rows: unknown key '{sorted(item)[0]}'",
                                  location=where)
            if not description:
                description = " ".join(query.split())[:60]
            item = {"query": query}
        columns = item.get("column")
        expanded = ([{**item, "column": c} for c in columns] if isinstance(columns, list)
                    else [item])
        for kwargs in expanded:
            specs.append(ExpectationSpec(relation, kind, kwargs, severity, description, where,
                                         [str(r) for r in requires]))
    return specs


def default_specs(model: Model) -> list[ExpectationSpec]:
    """Project-wide defaults: the unique key is not null and unique."""
    key = list(model.config.unique_key)
    specs = [ExpectationSpec(model.name, "expect_column_values_to_not_be_null", {"column": c})
             for c in key]
    if len(key) == 1:
        specs.append(ExpectationSpec(model.name, "expect_column_values_to_be_unique",
                                     {"column": key[0]}))
    elif len(key) > 1:
        specs.append(ExpectationSpec(model.name, "expect_compound_columns_to_be_unique",
                                     {"column_list": key}))
    return specs


# -- the validator the build loop calls --------------------------------------------------------
class Validator:
    """Builds each model's suite and runs it against the built relation.

    `relation_name(name)` is the quoted name of a relation in the target, written in the models'
    source dialect (DuckDB), as `Compiler.relation` returns it; `vars` are the
    resolved vars of the run (defaults plus --vars). `graph` (the compiler's DAG) enables the
    rule that a query only refs the model's ancestors; without it the rule is not checked.
    GX starts loading in a background thread at once (pass `background=False` to load it on
    the first `validate`). Call `close()` (or use `with`) before closing the engine.
    """

    def __init__(
        self,
        project_dir: Path,
        engine: Engine,
        relation_name: Callable[[str], str],
        vars: dict[str, Any],
        *,
        graph: Graph | None = None,
        macros_dir: Path | None = None,
        background: bool = True,
        fast: bool = False,
    ) -> None:
        self.project_dir = Path(project_dir)
        self.engine = engine
        self.relation_name = relation_name
        self.vars = dict(vars)
        self.graph = graph
        self.macros_dir = macros_dir or self.project_dir / "macros"
        self._env: jinja2.Environment | None = None
        self._refs: list[str] = []  # ref() calls of the query being rendered
        self._suites: dict[str, list[ExpectationSpec]] = {}
        # fast: pass/fail first in plain SQL (runner/sqlcheck.py); GX only when something fails
        self.fast = fast
        self._gx = _GXSession(engine, relation_name, background=background and not fast)

    # -- suites ------------------------------------------------------------------------------
    def suite_for(self, model: Model) -> list[ExpectationSpec]:
        """Defaults, then the header's `expectations:`, then `<model>.yml`; queries rendered."""
        if model.name in self._suites:
            return self._suites[model.name]
        specs = default_specs(model)
        if model.config.expectations:
            specs += _specs_from_items(model.name, list(model.config.expectations), model.path)
        path = expectations_file(model)
        if path.exists():
            specs += _specs_from_items(model.name, _read_expectations_file(path), path)
        by_name: dict[str, ExpectationSpec] = {}
        for spec in specs:
            if spec.type == UNEXPECTED_ROWS:
                spec.kwargs = {"query": self._render(model, spec)}
            by_name.pop(spec.name, None)  # a later declaration replaces an earlier one
            by_name[spec.name] = spec
        self._suites[model.name] = list(by_name.values())
        return self._suites[model.name]

    def _render(self, model: Model, spec: ExpectationSpec) -> str:
        """Jinja (this, ref, source, var, macros) -> SQL in the target's dialect, escaped for
        GX (which runs `str.format` on the query)."""
        env = self._environment()
        self._refs = []
        if "{batch}" in spec.kwargs["query"]:
            raise ConfigError(f"{spec.name}: write {{{{ this }}}} for the relation, not {{batch}}",
                              location=spec.origin)
        try:
            sql = env.from_string(spec.kwargs["query"]).render(
                this=self.relation_name(model.name))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{spec.name}: {exc.message}", location=spec.origin) from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{spec.name}: {exc}", location=spec.origin) from None
        if self.graph is not None:
            upstream = self.graph.ancestors(model.name)
            for name in self._refs:
                if name not in self.graph.models:
                    raise ConfigError(f"{spec.name}: ref('{name}') is not a model",
                                      location=spec.origin)
                if name != model.name and name not in upstream:
                    raise ConfigError(
                        f"{spec.name}: ref('{name}') is not upstream of {model.name}, so it may "
                        f"not be built yet when {model.name} is validated; declare it on a model "
                        "that depends on both", location=spec.origin)
        dialect = self.engine.dialect
        if dialect != _SOURCE_DIALECT:
            import sqlglot
            from sqlglot.errors import SqlglotError

            try:
                sql = sqlglot.transpile(sql, read=_SOURCE_DIALECT, write=dialect)[0]
            except SqlglotError as exc:
                raise ConfigError(f"{spec.name}: {str(exc).splitlines()[0]}",
                                  location=spec.origin) from None
        return sql.strip().rstrip(";").replace("{", "{{").replace("}", "}}")

    def _environment(self) -> jinja2.Environment:
        if self._env is None:
            from runner.compile import TargetInfo, macro_environment

            self._env = macro_environment(
                self.macros_dir, var=self._var, ref=self._ref,
                source=lambda _source, table: self.relation_name(table),
                target=TargetInfo("", self.engine.dialect, None), source_format="messages",
            )
        return self._env

    def _ref(self, name: str) -> str:
        self._refs.append(name)
        return self.relation_name(name)

    def _var(self, name: str) -> Any:
        from runner.compile import SqlValue

        if name not in self.vars:
            raise ConfigError(f"var '{name}' is not defined (see vars in arpu.yml)")
        return SqlValue(self.vars[name])

    # -- running -----------------------------------------------------------------------------
    def validate(self, model: Model) -> list[ExpectationResult]:
        """Run the model's suite against its built relation, in the warehouse.

        Raises ConfigError for a bad declaration (exit 2); a check that cannot run (bad SQL,
        missing column) is a failed result carrying `exception`."""
        specs = self.suite_for(model)
        if not specs:
            return []
        if not self.engine.relation_exists(model.name):
            why = f"relation {model.name} does not exist: run `arpu build`"
            return [ExpectationResult(model.name, s.name, s.severity, False, f"error: {why}",
                                      exception=why) for s in specs]
        runnable = [s for s in specs if all(self._exists(r) for r in s.requires)]
        if self.fast:
            from runner.sqlcheck import all_pass

            started = time.perf_counter()
            if all_pass(self.engine, self.relation_name(model.name), runnable):
                seconds = round((time.perf_counter() - started) / max(len(runnable), 1), 4)
                return [ExpectationResult(model.name, s.name, s.severity, True, "ok",
                                          seconds=seconds) for s in runnable]
        return self._gx.run(model.name, runnable, list(model.config.unique_key))

    def _exists(self, name: str) -> bool:
        return bool(self.engine.relation_exists(name))

    @property
    def gx_setup_seconds(self) -> float:
        """How long importing GX and creating the context took (mostly in the background)."""
        return self._gx.setup_seconds

    @property
    def gx_wait_seconds(self) -> float:
        """How long `validate` calls waited for that background setup."""
        return self._gx.wait_seconds

    def close(self) -> None:
        self._gx.close()

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- Great Expectations ------------------------------------------------------------------------
@dataclass
class _GXState:
    gx: Any  # the great_expectations module
    context: Any
    datasource: Any
    kind: str  # "sql" | "spark"
    batch_definitions: dict[str, Any] = field(default_factory=dict)


class _GXSession:
    """One ephemeral GX context and one datasource on the target for the Validator's lifetime."""

    def __init__(self, engine: Engine, relation_name: Callable[[str], str],
                 background: bool) -> None:
        self.engine = engine
        self.relation_name = relation_name
        self.setup_seconds = 0.0
        self.wait_seconds = 0.0
        self._loaded: tuple[Any, Any] | None = None  # (great_expectations, context)
        self._state: _GXState | None = None
        self._error: BaseException | None = None
        self._base: Any = None  # DuckDB: the cursor GX's connections derive from
        self._thread: threading.Thread | None = None
        if background:  # imports only: the warehouse is touched on the caller's thread
            self._thread = threading.Thread(target=self._load_quietly, name="arpu-gx",
                                            daemon=True)
            self._thread.start()

    def _load_quietly(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # reported by the first validate()
            self._error = exc

    def _load(self) -> None:
        """Import GX (about 1.5 s) and create the ephemeral context."""
        started = time.perf_counter()
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        # GX probes pyspark at import (~0.5 s, and a pandas-3 warning). Hide it unless the
        # target is Spark; once GX is imported, pyspark is importable again.
        hide_spark = self.engine.dialect != "spark" and "pyspark" not in sys.modules
        if hide_spark:
            sys.modules["pyspark"] = None  # type: ignore[assignment]
        try:
            import great_expectations as gx
        finally:
            if hide_spark and "pyspark" in sys.modules and sys.modules["pyspark"] is None:
                del sys.modules["pyspark"]
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.core import unexpected_rows_expectation

        if self.engine.dialect == "duckdb":
            with contextlib.suppress(ImportError):  # reported when the datasource is made
                import duckdb_engine  # noqa: F401

        # Every instantiation of an UnexpectedRowsExpectation whose query does not use
        # `{batch}` prints a hint to stdout. Ours name the relation itself (the batch is
        # always the whole relation, and `{batch}` needs dialect-specific aliasing), so that
        # module's `print` is silenced; nothing else in it prints.
        unexpected_rows_expectation.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False)
        if callable(getattr(context, "_save_project_config", None)):
            # An ephemeral context "saves" by serialising its whole config to YAML in memory
            # after every asset: ~10 ms a relation for a copy nobody reads.
            context._save_project_config = lambda *args, **kwargs: None  # type: ignore[method-assign]
        self._loaded = (gx, context)
        self.setup_seconds = time.perf_counter() - started

    def _datasource(self, context: Any) -> tuple[Any, str]:
        dialect = self.engine.dialect
        con = getattr(self.engine, "con", None)
        if dialect == "duckdb" and con is not None:
            try:
                from duckdb_engine import ConnectionWrapper
                from sqlalchemy.dialects import registry
            except ImportError:
                raise ArpuError("validating on DuckDB needs the duckdb-engine package: "
                                "pip install 'duckdb-engine>=0.13' 'sqlalchemy>=2,<2.1'") from None
            registry.register("duckdb.arpu", __name__, "ArpuDuckDBDialect")
            # GX's connections are cursors of one cursor of the engine's connection: the same
            # database, and the engine's own connection is never used by GX.
            base = self._base = con.cursor()
            datasource = context.data_sources.add_sql(
                name="arpu", connection_string="duckdb+arpu:///:memory:",
                kwargs={"creator": lambda: ConnectionWrapper(base.cursor())})
            return datasource, "sql"
        if dialect == "spark" and getattr(self.engine, "spark", None) is not None:
            return context.data_sources.add_spark(name="arpu"), "spark"
        url = getattr(self.engine, "sqlalchemy_url", None)
        if callable(url):
            url = url()
        if isinstance(url, str) and url and dialect == "postgres":
            return context.data_sources.add_postgres(name="arpu", connection_string=url), "sql"
        if isinstance(url, str) and url:  # any other SQLAlchemy target
            return context.data_sources.add_sql(name="arpu", connection_string=url), "sql"
        raise ArpuError(f"validation is not supported on {dialect} targets yet")

    def ready(self) -> _GXState:
        if self._state is not None:
            return self._state
        if self._thread is not None:
            waited = time.perf_counter()
            self._thread.join()
            self.wait_seconds += time.perf_counter() - waited
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, ArpuError):
                raise error
            raise ArpuError(f"cannot start Great Expectations: {type(error).__name__}: "
                            f"{_first_line(error)}") from error
        if self._loaded is None:
            self._load()
        assert self._loaded is not None
        gx, context = self._loaded
        datasource, kind = self._datasource(context)
        self._state = _GXState(gx, context, datasource, kind)
        return self._state

    def _batch(self, state: _GXState, relation: str) -> Any:
        from sqlglot import exp

        definition = state.batch_definitions.get(relation)
        # relation_name() quotes in the models' source dialect, like Compiler.relation()
        table = exp.to_table(self.relation_name(relation), dialect=_SOURCE_DIALECT)
        if state.kind == "spark":
            if definition is None:
                asset = state.datasource.add_dataframe_asset(name=relation)
                definition = asset.add_batch_definition_whole_dataframe("all")
                state.batch_definitions[relation] = definition
            frame = self.engine.spark.table(table.sql(dialect="spark"))  # type: ignore[attr-defined]
            return definition.get_batch(batch_parameters={"dataframe": frame})
        if definition is None:
            import warnings

            options: dict[str, Any] = {"table_name": table.name}
            if table.db:
                options["schema_name"] = table.db
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # schema_name is deprecated in favour of URLs
                asset = state.datasource.add_table_asset(name=relation, **options)
            definition = asset.add_batch_definition_whole_table("all")
            state.batch_definitions[relation] = definition
        return definition.get_batch()

    def _expectation(self, state: _GXState, spec: ExpectationSpec,
                     meta: dict[str, Any] | None = None) -> Any:
        from great_expectations.expectations.registry import get_expectation_impl

        kwargs = dict(spec.kwargs)
        if spec.type == UNEXPECTED_ROWS:
            cls = state.gx.expectations.UnexpectedRowsExpectation
            kwargs = {"unexpected_rows_query": kwargs["query"], "description": spec.description}
        else:
            try:
                cls = get_expectation_impl(spec.type)
            except Exception:
                raise ConfigError(f"unknown Great Expectations expectation '{spec.type}'",
                                  location=spec.origin) from None
        if "severity" in getattr(cls, "__fields__", {}):
            kwargs["severity"] = _GX_SEVERITY[spec.severity]
        kwargs["meta"] = {**(meta or {}), "arpu": spec.name}
        try:
            return cls(**kwargs)
        except Exception as exc:
            raise ConfigError(f"{spec.name}: {_pydantic_message(exc)}",
                              location=spec.origin) from None

    def run(self, relation: str, specs: list[ExpectationSpec],
            key_columns: list[str]) -> list[ExpectationResult]:
        """Pass 1: the whole suite in BOOLEAN_ONLY format (GX bundles the unexpected counts of
        all column checks into a few aggregate queries). Pass 2, for the failed expectations
        only: observed values and up to five failing rows (SUMMARY, keyed by the unique key;
        COMPLETE for unexpected_rows, whose queries return the violations themselves)."""
        if not specs:
            return []
        state = self.ready()
        started = time.perf_counter()
        for spec in specs:  # bad declarations are configuration errors, raised before running
            self._expectation(state, spec)
        try:
            batch = self._batch(state, relation)
            outcome = self._validate(state, batch, specs, "BOOLEAN_ONLY")
        except Exception as exc:  # the relation itself could not be read
            message = _first_line(exc)
            seconds = round((time.perf_counter() - started) / len(specs), 4)
            return [ExpectationResult(relation, s.name, s.severity, False, f"error: {message}",
                                      seconds=seconds, exception=message) for s in specs]
        results = [_convert(relation, spec, r) for spec, r in zip(specs, outcome, strict=True)]
        failed = [i for i, res in enumerate(results) if not res.success and res.exception is None]
        summary: dict[str, Any] = {"result_format": "SUMMARY",
                                   "partial_unexpected_count": MAX_EXAMPLES}
        if key_columns:
            summary["unexpected_index_column_names"] = key_columns
        for rows, result_format in ((False, summary), (True, "COMPLETE")):
            indexes = [i for i in failed if (specs[i].type == UNEXPECTED_ROWS) == rows]
            if not indexes:
                continue
            try:
                detailed = self._validate(state, batch, [specs[i] for i in indexes],
                                          result_format)
            except Exception:  # keep the verdicts of pass 1, without details
                continue
            for i, gx_result in zip(indexes, detailed, strict=True):
                res = _convert(relation, specs[i], gx_result)
                if res.exception is None and not res.success:
                    results[i] = res
        seconds = round((time.perf_counter() - started) / len(specs), 4)
        for res in results:
            res.seconds = seconds
        return results

    def _validate(self, state: _GXState, batch: Any, specs: list[ExpectationSpec],
                  result_format: Any) -> list[Any]:
        """One GX validation of `specs` as a suite; results in the order of `specs`."""
        suite = state.gx.ExpectationSuite(name="arpu")
        for index, spec in enumerate(specs):
            suite.add_expectation(self._expectation(state, spec, meta={"arpu_index": index}))
        outcome = batch.validate(suite, result_format=result_format)
        ordered: list[Any] = [None] * len(specs)
        for gx_result in outcome.results:
            position = (gx_result.expectation_config.meta or {}).get("arpu_index")
            if isinstance(position, int) and 0 <= position < len(specs):
                ordered[position] = gx_result
        return ordered

    def close(self) -> None:
        if self._thread is not None:  # never interrupt an import (interpreter shutdown)
            self._thread.join()
            self._thread = None
        if self._state is not None and self._state.kind == "sql":
            # Close every connection GX opened (the datasource's engine and the execution
            # engine's own), so that closing the engine really closes the DuckDB database.
            datasource = self._state.datasource
            for get in (lambda: datasource.get_engine(),
                        lambda: datasource.get_execution_engine().engine):
                with contextlib.suppress(Exception):
                    get().dispose()
        self._state = None
        self._loaded = None  # a later validate() starts a new context (GX stays imported)
        if self._base is not None:
            with contextlib.suppress(Exception):
                self._base.close()
            self._base = None


_DUCKDB_TYPES = {"double": "double precision", "decimal": "numeric", "blob": "bytea"}


def _duckdb_dialect() -> type:
    """duckdb-engine's SQLAlchemy dialect, adapted to a read-only validation connection.

    - No transactions: SQLAlchemy 2 rolls a connection back when GX returns it to the pool,
      before GX fetches the rows, and a DuckDB connection has a single result set, so the rows
      would be lost (GX issue #11579, duckdb-engine #1087). Validation only reads, and DuckDB
      runs every statement in its own transaction, so begin/commit/rollback are no-ops.
    - Reflection from DuckDB's information_schema: duckdb-engine's pg_catalog emulation takes
      50-70 ms per table (and fails on SQLAlchemy 2.1), for column names and types GX needs.
    """
    global _DIALECT
    if _DIALECT is not None:
        return _DIALECT
    from duckdb_engine import Dialect
    from sqlalchemy import types

    class ArpuDuckDBDialect(Dialect):  # type: ignore[misc]
        supports_statement_cache = False

        def do_begin(self, dbapi_connection: Any) -> None:
            pass

        def do_commit(self, dbapi_connection: Any) -> None:
            pass

        def do_rollback(self, dbapi_connection: Any) -> None:
            pass

        def has_table(self, connection: Any, table_name: str, schema: str | None = None,
                      **kw: Any) -> bool:
            found = connection.exec_driver_sql(
                "select count(*) from information_schema.tables where table_name = ? "
                "and table_schema = coalesce(?, current_schema())", (table_name, schema)).scalar()
            return bool(found)

        def get_columns(self, connection: Any, table_name: str, schema: str | None = None,
                        **kw: Any) -> Any:
            rows = connection.exec_driver_sql(
                "select column_name, data_type, is_nullable from information_schema.columns "
                "where table_name = ? and table_schema = coalesce(?, current_schema()) "
                "order by ordinal_position", (table_name, schema)).fetchall()
            if not rows:
                from sqlalchemy.exc import NoSuchTableError

                raise NoSuchTableError(table_name)
            columns = []
            for name, data_type, nullable in rows:
                base = str(data_type).lower().split("(")[0].strip()
                type_class = self.ischema_names.get(_DUCKDB_TYPES.get(base, base),
                                                    types.NullType)
                columns.append({"name": name, "type": type_class(), "nullable": nullable == "YES",
                                "default": None, "autoincrement": False})
            return columns

        def get_pk_constraint(self, connection: Any, table_name: str,
                              schema: str | None = None, **kw: Any) -> Any:
            return {"constrained_columns": [], "name": None}  # models are built by CTAS

    _DIALECT = ArpuDuckDBDialect
    return _DIALECT


_DIALECT: type | None = None


def __getattr__(name: str) -> Any:
    """SQLAlchemy loads the dialect by name (`duckdb+arpu://`) from this module, lazily."""
    if name == "ArpuDuckDBDialect":
        return _duckdb_dialect()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- GX results -> ExpectationResult -----------------------------------------------------------
def _convert(relation: str, spec: ExpectationSpec, gx_result: Any) -> ExpectationResult:
    if gx_result is None:
        return ExpectationResult(relation, spec.name, spec.severity, False,
                                 "error: no result from Great Expectations",
                                 exception="no result from Great Expectations")
    message = _exception_message(gx_result.exception_info or {})
    if message:
        first = message.strip().splitlines()[0] if message.strip() else message
        return ExpectationResult(relation, spec.name, spec.severity, False, f"error: {first}",
                                 exception=message)
    result = dict(gx_result.result or {})
    success = bool(gx_result.success)
    if not result:  # BOOLEAN_ONLY: the verdict alone
        return ExpectationResult(relation, spec.name, spec.severity, success,
                                 "ok" if success else "failed")
    examples = [] if success else _examples(spec, result)
    return ExpectationResult(relation, spec.name, spec.severity, success,
                             _observed(spec, result), examples)


def _exception_message(info: dict[str, Any]) -> str | None:
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "exception")
    return None


def _observed(spec: ExpectationSpec, result: dict[str, Any]) -> str:
    if "unexpected_count" in result:
        count, total = result.get("unexpected_count") or 0, result.get("element_count")
        text = f"{count} of {total} rows unexpected"
        if count and result.get("unexpected_percent") is not None:
            text += f" ({float(result['unexpected_percent']):.3g}%)"
        return text
    value = result.get("observed_value")
    if spec.type == UNEXPECTED_ROWS:
        return f"{value} violating row{'' if value == 1 else 's'}"
    if spec.type.startswith("expect_table_row_count"):
        return f"{value} rows"
    if spec.type.startswith("expect_table_columns"):
        missing = ((result.get("details") or {}).get("mismatched") or {}).get("missing")
        if missing:
            return "missing columns: " + ", ".join(map(str, missing))
        return f"{len(value or [])} columns"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _short(value) if value is not None else ""


def _examples(spec: ExpectationSpec, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[Any] = []
    indexed = result.get("partial_unexpected_index_list")
    if spec.type == UNEXPECTED_ROWS:
        rows = list((result.get("details") or {}).get("unexpected_rows") or [])
    elif isinstance(indexed, list) and indexed and isinstance(indexed[0], dict):
        rows = indexed
    else:
        for item in result.get("partial_unexpected_list") or []:
            if isinstance(item, dict):
                rows.append(item)
            elif isinstance(item, (list, tuple)) and "column_A" in spec.kwargs:
                rows.append({spec.kwargs["column_A"]: item[0], spec.kwargs["column_B"]: item[1]})
            elif isinstance(item, (list, tuple)) and "column_list" in spec.kwargs:
                rows.append(dict(zip(spec.kwargs["column_list"], item, strict=False)))
            else:
                rows.append({str(spec.kwargs.get("column", "value")): item})
    return [_jsonable_row(r) for r in rows[:MAX_EXAMPLES]]


def _jsonable_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        return {"value": _jsonable(row)}
    return {str(k): _jsonable(v) for k, v in row.items()}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _pydantic_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        with contextlib.suppress(Exception):
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- artifacts ---------------------------------------------------------------------------------
def write_junit(path: Path, results: list[ExpectationResult]) -> None:
    """JUnit XML for CI: one testsuite per relation, one testcase per expectation.

    A failed `error` expectation is a <failure> (an <error> when the check could not run); a
    failed `warn` expectation is <skipped>, so it shows in CI without failing it. Messages carry
    the observed value, the body up to five failing rows as JSON."""
    relations: dict[str, list[ExpectationResult]] = {}
    for res in results:
        relations.setdefault(res.relation, []).append(res)
    root = ET.Element("testsuites", name="arpu")
    for relation, items in relations.items():
        suite = ET.SubElement(root, "testsuite", name=relation)
        for res in items:
            case = ET.SubElement(suite, "testcase", classname=f"arpu.{relation}",
                                 name=res.expectation, time=f"{res.seconds:.4f}")
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="severity", value=res.severity)
            ET.SubElement(props, "property", name="observed", value=res.observed)
            if res.success:
                continue
            if res.severity == "warn":
                tag = "skipped"
            else:
                tag = "error" if res.exception else "failure"
            element = ET.SubElement(case, tag, message=f"[{res.severity}] observed: "
                                    f"{res.observed}", type=res.expectation.split("(")[0])
            element.text = _failure_text(res)
        _count(suite, items)
    _count(root, results)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _count(element: ET.Element, items: list[ExpectationResult]) -> None:
    failed = [r for r in items if not r.success]
    element.set("tests", str(len(items)))
    element.set("failures", str(sum(1 for r in failed if r.severity == "error"
                                    and not r.exception)))
    element.set("errors", str(sum(1 for r in failed if r.severity == "error" and r.exception)))
    element.set("skipped", str(sum(1 for r in failed if r.severity == "warn")))
    element.set("time", f"{sum(r.seconds for r in items):.4f}")


def _failure_text(res: ExpectationResult) -> str:
    lines = [f"{res.relation}: {res.expectation}", f"severity: {res.severity}",
             f"observed: {res.observed}"]
    if res.failing_examples:
        lines.append(f"failing rows (up to {MAX_EXAMPLES}):")
        lines += [json.dumps(row, default=str, sort_keys=True) for row in res.failing_examples]
    return "\n".join(lines)


def write_results(path: Path, results: list[ExpectationResult]) -> None:
    """`target/expectation_results.json`: every result as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")

