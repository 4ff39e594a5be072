"""`arpu.yml` as typed models. The field docs here are the reference for every key."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.dialect import quoted
from runner.errors import ConfigError, UsageError

CONFIG_FILE = "arpu.yml"
# libyaml's parser where PyYAML was built with it (15x faster: arpu.yml is read by every
# command, model headers by every compile), else PyYAML's own
FAST_YAML: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Schema, database and model names reach SQL as identifiers: plain ones only.
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,55}$"  # room for __work and __next


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Target(_Strict):
    """What the rest of arpu asks of a target before it connects (runner/engines/ knows the
    rest): where models are built and published, and how connecting reads in the terminal."""

    # BI tools read a published copy (a file, schema or database) that a build swaps in
    reads_published_apart: ClassVar[bool] = False
    # connecting takes long enough to report (everything but a local file)
    reports_connecting: ClassVar[bool] = True
    # builds independent models at once, as many as its `concurrency` (`--threads`) says
    builds_at_once: ClassVar[bool] = False
    type: str  # each target class narrows it to its own name

    @property
    def dialect(self) -> str:
        """The SQL dialect a model is written in for this target: sqlglot names them as
        arpu names target types."""
        return self.type

    def relation(self, name: str, published: bool = False) -> str:
        """`name` where a build writes it, or (`published`) where readers find it, quoted in
        the models' dialect: `"schema"."name"`, or `"name"` when the schema is None."""
        schema = self.published_schema() if published else self.work_schema()
        return f"{quoted(schema)}.{quoted(name)}" if schema else quoted(name)

    def published_schema(self) -> str | None:
        """The schema that qualifies the published relations' names (None: unqualified)."""
        return None

    def work_schema(self) -> str | None:
        """The schema that qualifies the names of the relations a build writes."""
        return self.published_schema()

    def connecting_detail(self) -> str:
        """What connecting also does, for the progress line ("" when nothing)."""
        return ""


class DuckDBTarget(_Target):
    type: Literal["duckdb"] = "duckdb"
    reads_published_apart: ClassVar[bool] = True
    reports_connecting: ClassVar[bool] = False
    builds_at_once: ClassVar[bool] = True
    path: str = Field("arpu.duckdb", description="The published database BI tools read.")
    work_path: str | None = Field(
        None, description="Where ingest and build work (default: <path stem>.work.duckdb).")
    threads: int | None = Field(None, description="DuckDB worker threads (default: all cores).")
    concurrency: int | None = Field(
        None, ge=1, description="Models built at once when they do not depend on each other "
                                "(default: DuckDB's threads, at most 4, while the raw data is "
                                "under one row group per thread; else 1, one by one).")
    memory_limit: str | None = Field(None, description="e.g. '4GB'; larger data spills to disk.")
    temp_directory: str | None = Field(
        None, description="Where DuckDB spills, relative to the project (default: beside the "
                          "work database, `<work file>.tmp`).")
    storage_version: str | None = Field(
        "v1.1.0", pattern=r"^v\d+\.\d+\.\d+$",
        description="The published file's storage format: the oldest DuckDB that opens it "
                    "(BI tools bundle DuckDB 1.x drivers); null: this DuckDB's own format.")


class PostgresTarget(_Target):
    type: Literal["postgres"] = "postgres"
    reads_published_apart: ClassVar[bool] = True
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password_env: str = Field(
        "ARPU_PG_PASSWORD", description="Name of the environment variable holding the password."
    )
    schema_: str = Field("arpu", alias="schema", pattern=IDENTIFIER,
                         description="Schema of the published views; arpu refuses one holding "
                                     "objects it did not create, and works in <schema>__work.")
    grants: dict[Literal["select"], list[str]] = Field(
        default_factory=dict, description="Granted on every published view after each publish, "
        "with USAGE on the schema: {select: [bi_role]}. arpu grants, never revokes.")
    lock_timeout: float = Field(
        3, gt=0, description="Seconds a publish waits for readers' locks (and readers wait "
                             "behind it at most this long) before it tries again.")
    publish_retries: int = Field(
        3, ge=0, description="Tries again, after 1, 2, 4... seconds, before the build fails "
                             "naming the session that holds the lock; published views unchanged.")

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env)

    def published_schema(self) -> str | None:
        return self.schema_

    def work_schema(self) -> str | None:
        """Models are built in `<schema>__work`, then swapped in (runner/engines/postgres.py)."""
        return f"{self.schema_}__work"


class SparkTarget(_Target):
    type: Literal["spark"] = "spark"
    builds_at_once: ClassVar[bool] = True
    master: str = Field("local[*]", description="local[*], spark://host:port or sc://host.")
    database: str = Field("arpu", pattern=IDENTIFIER)
    warehouse_dir: str = "target/spark-warehouse"
    concurrency: int = Field(
        2, ge=1, description="Models built at once when they do not depend on each other: "
                             "Spark plans one while it runs another's jobs.")
    conf: dict[str, str] = Field(
        {}, description="Spark settings for the session, as in spark-defaults.conf; they win "
                        "over arpu's, except spark.driver.extraJavaOptions, which is added to "
                        "arpu's (e.g. '-XX:TieredStopAtLevel=1': less JVM CPU on small data).")

    def published_schema(self) -> str | None:
        return self.database

    def connecting_detail(self) -> str:
        return f"starting Spark on {self.master}"


class ClickHouseTarget(_Target):
    """ClickHouse, embedded in the arpu process through chdb (its data in the folder `path`;
    one process opens it at a time), or a server through clickhouse-connect when `host` is set.
    arpu works in `<database>__work` and publishes to `<database>`."""

    type: Literal["clickhouse"] = "clickhouse"
    reads_published_apart: ClassVar[bool] = True
    path: str = Field("target/clickhouse", description="Embedded (no host): the data folder, "
                                                       "relative to the project.")
    host: str | None = Field(None, description="A ClickHouse server's host (HTTP interface); "
                                               "unset: embedded chdb at `path`.")
    port: int = Field(8123, description="The server's HTTP port (8443 with secure).")
    secure: bool = Field(False, description="HTTPS to the server.")
    user: str = "default"
    password_env: str = Field(
        "ARPU_CLICKHOUSE_PASSWORD",
        description="Name of the environment variable holding the server's password.")
    # `database_`, not `database`: the models' relation names stay unqualified, and the
    # engine's session (working or published) says which database they are in
    database_: str = Field("arpu", alias="database", pattern=IDENTIFIER,
                           description="Database of the published tables; arpu works in "
                                       "<database>__work.")

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env)


class CompileOnlyTarget(_Target):
    """A dialect arpu compiles to but does not execute on (SQL lands in target/compiled/)."""

    type: Literal["snowflake", "bigquery", "redshift", "trino", "databricks"]


TARGET_TYPES = {"duckdb", "postgres", "spark", "clickhouse", "snowflake", "bigquery", "redshift",
                "trino", "databricks"}
Target = Annotated[
    DuckDBTarget | PostgresTarget | SparkTarget | ClickHouseTarget | CompileOnlyTarget,
    Field(discriminator="type"),
]


def _default_target() -> Target:
    return DuckDBTarget()


# SPEC: size limits are configurable, by default at least 1 MiB per message and 10,000 products
# per order, so that a real order is never rejected for its size (ingest's defaults too)
MAX_MESSAGE_BYTES = 1 << 20
MAX_PRODUCTS = 10_000


class Source(_Strict):
    format: Literal["messages", "segment_warehouse"] = "messages"
    path: str | None = Field(
        None, description="A glob of message files read in place; unset: the raw_events table."
    )
    schema_: str | None = Field(
        None, alias="schema", pattern=IDENTIFIER,
        description="Schema of Segment's warehouse tables.",
    )
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES, ge=1,
        description="A longer message file line is rejected, read no further.")
    max_products: int = Field(
        MAX_PRODUCTS, ge=0, description="An order with more products is rejected.")


class Vars(_Strict):
    """Vars of SPEC section 2, with their defaults. Override per run with --vars '{...}'."""

    start_date: dt.datetime | dt.date | None = Field(
        None, description="Analysis range start (inclusive): a date or an ISO 8601 timestamp "
                          "(UTC unless it carries an offset).")
    end_date: dt.datetime | dt.date | None = Field(
        None, description="Analysis range end (exclusive), as start_date.")
    conversion_window_days: int = Field(7, ge=0, description="Funnel conversion window, days.")
    funnel_reentry: bool = Field(False, description="Mixpanel's optimized re-entry.")
    promo_start: dt.datetime | dt.date | None = Field(
        None, description="Cohort is fixed on events before it; a date or a timestamp.")
    target_category: str | None = Field(None, description="Overrides the recommended category.")
    experiment_window_days: int = Field(30, ge=0, description="Days of revenue after exposure.")
    control_variant: str | None = Field(None, description="Name of the control variant.")

    @field_validator("start_date", "end_date", "promo_start", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """A date stays a date; a timestamp becomes naive UTC (the models' time zone)."""
        if isinstance(value, str):
            value = _parse_instant(value)
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    @model_validator(mode="after")
    def _possible_range(self) -> Vars:
        if self.start_date is not None and self.end_date is not None and (
                _instant(self.start_date) >= _instant(self.end_date)):
            raise ValueError(f"start_date ({self.start_date}) must be before end_date "
                             f"({self.end_date}): the range [start_date, end_date) is empty")
        return self


def _instant(value: dt.date) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime(
        value.year, value.month, value.day)


def _parse_instant(text: str) -> dt.date | dt.datetime:
    """`2026-03-01`, `2026-03-01T10:00:00`, `2026-03-01 10:00:00+02:00`, `...Z`."""
    text = text.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        if text[-1:] in "Zz":  # Python 3.10's fromisoformat has no Z
            text = text[:-1] + "+00:00"
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a date or an ISO 8601 timestamp") from None


class Config(_Strict):
    target: str = Field("duckdb", description="Name of the default target.")
    targets: dict[str, Target] = Field(default_factory=lambda: {"duckdb": _default_target()})
    source: Source = Field(default_factory=Source)
    vars: Vars = Field(default_factory=Vars)
    models_path: str = "models"
    macros_path: str = "macros"
    seed_path: str = Field("seeds/sample_events.ndjson.gz", description="The bundled sample.")


def _location(path: Path, text: str, loc: tuple[Any, ...]) -> str:
    """`file:line` of the deepest key of `loc` that the YAML text has."""
    try:
        node = yaml.compose(text, Loader=FAST_YAML)
    except yaml.YAMLError:
        return str(path)
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(key):
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return f"{path}:{line}" if line else str(path)


def _loc(err: Any) -> tuple[Any, ...]:
    """The error's key path without pydantic's union tags (targets.<name>.<type>.<key>)."""
    loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    if len(loc) > 3 and loc[0] == "targets" and loc[2] in TARGET_TYPES:
        loc = loc[:2] + loc[3:]
    return loc


def _format_error(err: Any) -> str:
    key = ".".join(str(p) for p in _loc(err))
    kinds = {"extra_forbidden": "unknown key", "missing": "missing key"}
    msg = kinds.get(err["type"], err["msg"]).removeprefix("Value error, ")
    return f"{key}: {msg}" if key else msg


def find_project(start: Path) -> Path:
    """The folder holding `arpu.yml`: `start` or the nearest of its parents, as dbt and git
    look for their project (`-C dir`, else the current folder, is the start)."""
    start = start.expanduser()
    if not start.is_dir():
        raise UsageError("no such folder" if not start.exists() else "not a folder",
                         location=str(start))
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise UsageError(f"no {CONFIG_FILE} in {start} or its parents (run `arpu init` to start "
                     "a project, or pass -C <project folder>)")


class _EnvVarMissing(Exception):
    pass


def _env_var(name: str, default: Any = None) -> str:
    """dbt's env_var(): the variable's value, else the default, else a config error."""
    if name in os.environ:
        return os.environ[name]
    if default is None:
        raise _EnvVarMissing(name)
    return str(default)


def _render_env_vars(node: yaml.Node | None, path: Path) -> list[str]:
    """Render each scalar of arpu.yml that holds Jinja (`{{ env_var('X', 'default') }}`) in a
    sandbox that offers env_var() and nothing else. Scalars are rendered after the YAML is
    parsed, each once, and stay strings, so a value from the environment is data: it cannot
    add keys or be rendered again. Returns the rendered values (kept out of error messages)."""
    rendered: list[str] = []
    seen: set[int] = set()
    stack = [node] if node is not None else []
    environment = None
    while stack:
        current = stack.pop()
        if id(current) in seen:  # an alias: the same node again
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            stack.extend(reversed([value for _, value in current.value]))  # in file order
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(reversed(current.value))
        elif isinstance(current, yaml.ScalarNode) and ("{{" in current.value
                                                        or "{%" in current.value):
            if environment is None:
                from jinja2 import StrictUndefined
                from jinja2.sandbox import SandboxedEnvironment

                environment = SandboxedEnvironment(undefined=StrictUndefined)
                environment.globals.clear()
                environment.globals["env_var"] = _env_var
            current.value = _render_scalar(environment, current, path)
            current.tag = "tag:yaml.org,2002:str"
            rendered.append(current.value)
    return rendered


def _render_scalar(environment: Any, node: yaml.ScalarNode, path: Path) -> str:
    import jinja2

    line = node.start_mark.line + 1
    try:
        return str(environment.from_string(node.value).render())
    except _EnvVarMissing as exc:
        raise ConfigError(f"env_var('{exc.args[0]}'): the environment variable is not set and "
                          "has no default (env_var('NAME', 'default'))",
                          location=f"{path}:{line}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"Jinja: {exc.message}", location=f"{path}:{line}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"Jinja: {exc.message} (arpu.yml offers env_var() only)",
                          location=f"{path}:{line}") from None
    except Exception as exc:  # the sandbox's refusals, a wrong call to env_var()
        raise ConfigError(f"Jinja: {type(exc).__name__}: {exc}",
                          location=f"{path}:{line}") from None


def _construct(node: yaml.Node, path: Path) -> Any:
    """The YAML's values; a scalar YAML cannot build (a date such as 2026-13-45) is a config
    error at its line, not a Python exception."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        message, where = str(exc), str(path)
        stack = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, yaml.MappingNode):
                stack.extend(reversed([n for pair in current.value for n in pair]))
            elif isinstance(current, yaml.SequenceNode):
                stack.extend(reversed(current.value))
            elif isinstance(current, yaml.ScalarNode):
                try:
                    yaml.SafeLoader("").construct_object(current)
                except (ValueError, TypeError, yaml.YAMLError):
                    kind = current.tag.rsplit(":", 1)[-1].replace("timestamp", "date")
                    message = f"'{current.value}' is not a valid {kind} ({exc})"
                    where = f"{path}:{current.start_mark.line + 1}"
                    break
        raise ConfigError(message, location=where) from None
    finally:
        loader.dispose()


def load_config(project_dir: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read `arpu.yml` (defaults when absent) and apply var overrides from --vars. Any value
    may read the environment as in dbt: `host: "{{ env_var('ARPU_PG_HOST', '127.0.0.1') }}"`."""
    path = project_dir / CONFIG_FILE
    text = path.read_text() if path.exists() else ""
    try:
        node = yaml.compose(text, Loader=FAST_YAML)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"not valid YAML: {problem}", location=where) from None
    from_env = _render_env_vars(node, path)
    data = _construct(node, path) if node is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", location=str(path))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = _format_error(err)
        if any(value in message.partition(": ")[2] for value in from_env if value):
            # a value read from the environment may be a secret: never print it
            message = (".".join(str(p) for p in _loc(err)) +
                       ": not a valid value (it comes from env_var(); not shown)")
        raise ConfigError(message, location=_location(path, text, _loc(err))) from None
    if config.target not in config.targets:
        raise ConfigError(f"target: '{config.target}' is not defined under targets",
                          location=str(path))
    if overrides:
        config = config.model_copy(update={"vars": merge_vars(config.vars, overrides)})
    return config


def merge_vars(base: Vars, overrides: dict[str, Any]) -> Vars:
    unknown = sorted(set(overrides) - set(Vars.model_fields))
    if unknown:
        raise ConfigError(f"unknown var '{unknown[0]}' (known: {', '.join(Vars.model_fields)})",
                          location="--vars")
    try:
        return Vars.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc.errors()[0]), location="--vars") from None


def parse_vars_option(text: str | None) -> dict[str, Any]:
    """--vars takes JSON or YAML flow mappings, as dbt does."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError("not a JSON or YAML mapping", location="--vars") from None
    if not isinstance(value, dict):
        raise ConfigError("expected a mapping such as '{\"conversion_window_days\": 7}'",
                          location="--vars")
    return value
