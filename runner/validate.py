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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from runner.errors import ConfigError

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
class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's when present: 10x faster) that remembers the line of every
    mapping (key `__line__`)."""


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
        from runner.gx import GXSession

        self._gx = GXSession(engine, relation_name, background=background and not fast
                             and getattr(engine, "validates_with_gx", True))
        self._gx_lock = threading.Lock()

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
        gx = getattr(self.engine, "validates_with_gx", True)
        if self.fast or not gx:
            from runner.sqlcheck import all_pass

            started = time.perf_counter()
            if all_pass(self.engine, self.relation_name(model.name), runnable):
                seconds = round((time.perf_counter() - started) / max(len(runnable), 1), 4)
                return [ExpectationResult(model.name, s.name, s.severity, True, "ok",
                                          seconds=seconds) for s in runnable]
        if not gx:  # GX cannot run on this target: the plain-SQL checks are the verdict
            from runner.sqlcheck import verdicts

            return verdicts(self.engine, model.name, self.relation_name(model.name), runnable,
                            list(model.config.unique_key))
        with self._gx_lock:  # one GX context, not made for threads
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


