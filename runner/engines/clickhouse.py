"""ClickHouse: embedded in the arpu process through chdb, or a server through clickhouse-connect.

arpu works in `<database>__work` (raw tables, watermarks, every model) and publishes to
`<database>`. Relation names in the compiled SQL are unqualified: a session's current database
says where they are (the build's session is in the work database, a reader's in the published
one), as the attached file does for DuckDB.

What ClickHouse does differently, and how this file bridges it:
- Columns are not nullable unless declared so, and an outer join fills the missing side with
  default values: every session sets `join_use_nulls` and `data_type_default_nullable`, and
  sqlglot writes each cast as `Nullable(...)`. Times are `DateTime64(6, 'UTC')`, in a UTC
  session (`session_timezone`).
- No transactions. A model is written to a new table and exchanged with the old one
  (`EXCHANGE TABLES` is atomic): readers see the old or the new table, never half of one. An
  incremental model merges by writing its kept rows and its new rows to a new table, exchanged
  the same way; its watermark (the model's newest row in `arpu_watermarks`: no DELETE, a
  mutation here) is written after the rows, so a build killed in between processes those loads
  again (the merge re-decides from every copy, so that is idempotent), and the watermark is
  never ahead of the rows.
- Publish copies each work table into `<database>` (`CLONE AS`: the parts are shared, not
  copied) and exchanges it with the published one: each table is the old or the new one at every
  moment; a reader that reads two tables while a publish runs may see one of each.
- Great Expectations has no SQLAlchemy dialect for chdb: the plain-SQL checks of
  runner/quality/sqlcheck.py are the verdict here (`validates_with_gx`).
- Embedded chdb opens one data folder per process, and one process holds it at a time: a second
  `arpu` command waits for nothing and fails with one line saying so (a server has no such limit).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config import ClickHouseTarget
from runner.dialect import SOURCE_DIALECT
from runner.engines.base import (
    RAW_TABLES_DDL,
    SAMPLE_LOADS_DDL,
    WATERMARKS,
    Engine,
    TargetSql,
    arrow_rows,
)
from runner.errors import ArpuError, UsageError

if TYPE_CHECKING:
    from sqlglot import exp

# Session settings that make ClickHouse read the models as DuckDB does.
SETTINGS: dict[str, Any] = {
    "session_timezone": "UTC",
    "join_use_nulls": 1,  # the missing side of an outer join is null, not 0 or ''
    "data_type_default_nullable": 1,  # declared columns are nullable unless said otherwise
    "mutations_sync": 2,  # ALTER ... DELETE returns once done
    "lightweight_deletes_sync": 2,  # DELETE FROM likewise
    "union_default_mode": "DISTINCT",
    # `min(x) as y ... where y = ...`: y is the input's column, as in SQL, not the alias
    "prefer_column_name_to_alias": 1,
}
TABLE_ENGINE = "engine = MergeTree order by tuple()"
TIMESTAMP = "DateTime64(6, 'UTC')"
_PARAM = re.compile(r"'(?:[^'\\]|\\.|'')*'|\?")  # a string literal (kept) or a placeholder


class ClickHouseSql(TargetSql):
    """DateTime is whole seconds, read back as numbers: the models' timestamps are
    DateTime64(6), and so are a query's casts. Its median() is an estimate;
    quantileExactInclusive is not, and has no discrete form."""

    timestamp_type = "Nullable(DateTime64(6))"

    def percentile(self, node: exp.WithinGroup) -> exp.Expression:
        from sqlglot import exp

        if not isinstance(node.this, exp.PercentileCont):
            raise UsageError("discrete percentiles have no exact form on clickhouse",
                             location="--dialect")
        return exp.ParameterizedAgg(this="quantileExactInclusive", expressions=[node.this.this],
                                    params=[node.expression.expressions[0].this])


SQL = ClickHouseSql("clickhouse")  # this target's SQL differences (runner.engines.target_sql)


class ClickHouseEngine(Engine):
    dialect = "clickhouse"
    supports_merge = True
    validates_with_gx = False  # runner/quality/validator.py: the plain-SQL checks are the verdict

    def __init__(self, project_dir: Path, target: ClickHouseTarget, published: bool = False
                 ) -> None:
        self.published_database = target.database_
        self.work_database = f"{target.database_}__work"
        self.database = self.published_database if published else self.work_database
        if target.host:
            self.where = f"{target.host}:{target.port}"
            self._session: _Session = _Server(target)
        else:
            path = Path(target.path)
            path = path if path.is_absolute() else project_dir / path
            self.where = str(path)
            self._session = _Embedded(path)
        try:
            for database in (self.work_database, self.published_database):
                self._session.command(f"create database if not exists {self.quote(database)}")
            self._session.use(self.database)
        except BaseException:
            self._session.close()
            raise

    def quote(self, name: str) -> str:
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"

    def _q(self, name: str, database: str | None = None) -> str:
        return f"{self.quote(database or self.database)}.{self.quote(name)}"

    # -- running SQL -----------------------------------------------------------------------
    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        self._run(sql, params, fetch=False)

    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        return self._run(sql, params, fetch=True)

    def _run(self, sql: str, params: list[Any] | None, fetch: bool
             ) -> tuple[list[str], list[tuple]]:
        sql, bound = _bind(sql, params or [])
        try:
            if not fetch:
                self._session.command(sql, bound)
                return [], []
            return self._session.query(sql, bound)
        except ArpuError:
            raise
        except Exception as exc:  # the driver's error: its first line, with where it ran
            raise ArpuError(_first_line(exc), location=f"clickhouse {self.where}") from exc

    # -- relations -------------------------------------------------------------------------
    def relation_exists(self, name: str) -> bool:
        return self._kind(name, self.database) is not None

    def _columns(self, name: str) -> list[str]:
        return [str(r[0]) for r in self.fetch(
            "select name from system.columns where database = ? and table = ? order by position",
            [self.database, name])[1]]

    def _kind(self, name: str, database: str) -> str | None:
        """"view", "table", or None where there is no such relation (one catalog query)."""
        engine = self.scalar("select engine from system.tables where database = ? and name = ?",
                             [database, name])
        return None if engine is None else "view" if engine == "View" else "table"

    def materialize(self, name: str, select_sql: str, kind: str,
                    after: list[str] | None = None) -> int | None:
        """A table is written beside the old one and exchanged with it; a view is replaced.
        The `after` statements (watermarks) run once the relation is in place."""
        if kind == "view":
            self._drop(name, self.database)
            self.execute(f"create view {self._q(name)} as "
                         f"{as_written(select_sql, self._columns)}")
            rows = None
        else:
            new = f"__arpu_new_{name}"
            self._drop(new, self.database)
            self.execute(f"create table {self._q(new)} {TABLE_ENGINE} as "
                         f"{as_written(select_sql, self._columns)}")
            self._swap_in(new, name, self.database)
            rows = int(self.scalar(f"select count() from {self._q(name)}"))
        for statement in after or []:
            self.execute(statement)
        return rows

    def merge(self, name: str, select_sql: str, keys: list[str],
              after: list[str] | None = None) -> int:
        """The rows of `select_sql` replace those with the same `keys`: the kept rows and the
        new ones are written to a new table that is exchanged with the model's; then `after`."""
        changed, merged = f"__arpu_changed_{name}", f"__arpu_new_{name}"
        for table in (changed, merged):
            self._drop(table, self.database)
        key = ", ".join(self.quote(k) for k in keys)
        key = f"({key})" if len(keys) > 1 else key
        try:
            self.execute(f"create table {self._q(changed)} {TABLE_ENGINE} as "
                         f"{as_written(select_sql, self._columns)}")
            self.execute(
                f"create table {self._q(merged)} {TABLE_ENGINE} as "
                f"select * from {self._q(name)} where {key} not in "
                f"(select {key} from {self._q(changed)}) "
                f"union all select * from {self._q(changed)}")
            rows = int(self.scalar(f"select count() from {self._q(changed)}"))
            self._swap_in(merged, name, self.database)
        finally:
            self._drop(changed, self.database)
        for statement in after or []:
            self.execute(statement)
        return rows

    def _swap_in(self, new: str, name: str, database: str) -> None:
        """`new` becomes `name` in one step (EXCHANGE TABLES, or RENAME when there is none);
        the old table, now called `new`, is dropped. In the published database the drop does
        not wait: a reader's query on the old table finishes on it."""
        wait = database != self.published_database
        kind = self._kind(name, database)
        if kind == "table":
            self.execute(f"exchange tables {self._q(new, database)} and {self._q(name, database)}")
            self._drop(new, database, wait, kind="table")
        else:
            if kind == "view":
                self._drop(name, database, wait, kind="view")
            self.execute(f"rename table {self._q(new, database)} to {self._q(name, database)}")

    def _drop(self, name: str, database: str, wait: bool = True, kind: str | None = None
              ) -> None:
        """Drop `name` if it exists (`kind`, when the caller knows it, saves asking)."""
        kind = kind or self._kind(name, database)
        if kind is not None:
            self.execute(f"drop {kind} if exists {self._q(name, database)}"
                         f"{' sync' if wait else ''}")

    # -- incremental state -----------------------------------------------------------------
    def watermarks_table(self) -> str:
        return self._q(WATERMARKS)

    # a model's watermark is its newest row: writing one is an insert, where a DELETE first
    # (a mutation, ~170 ms) cost 2 s of a 2.8 s build of the hand fixtures
    watermark_aggregate = "argMax(load_id, (built_at, load_id))"

    def watermark_statements(self, model: str, load_id: int) -> list[str]:
        from sqlglot import exp

        name = exp.Literal.string(model).sql("clickhouse")
        table = self._q(WATERMARKS)
        return [f"create table if not exists {table} (model String, load_id Int64, "
                f"built_at {TIMESTAMP}) {TABLE_ENGINE}",
                f"insert into {table} values ({name}, {int(load_id)}, now64(6))"]

    # -- raw tables ------------------------------------------------------------------------
    def ensure_raw_tables(self) -> None:
        """RAW_TABLES_DDL in ClickHouse's types: JSON as String, timestamps as
        DateTime64(6, 'UTC'), MergeTree tables."""
        import sqlglot
        from sqlglot import exp

        for statement in sqlglot.parse(RAW_TABLES_DDL + SAMPLE_LOADS_DDL, read=SOURCE_DIALECT):
            if statement is None:
                continue
            for column in statement.find_all(exp.ColumnDef):
                kind = column.args["kind"]
                if kind.is_type(exp.DataType.Type.JSON):
                    column.set("kind", exp.DataType.build("String", dialect="clickhouse"))
                elif kind.is_type(*_TIMESTAMPS):
                    column.set("kind", exp.DataType.build(TIMESTAMP, dialect="clickhouse"))
            self.execute(f"{statement.sql('clickhouse')} {TABLE_ENGINE}")

    def delete_where(self, table: str, condition: str) -> None:
        """A lightweight DELETE (rows are marked at once, removed at the next merge), waited
        for (`lightweight_deletes_sync`)."""
        import sqlglot

        predicate = sqlglot.parse_one(condition, read="duckdb").sql("clickhouse")
        self.execute(f"delete from {self._q(table)} where {predicate}")

    def append_raw(self, local: Any, load_id_offset: int) -> None:
        """Each raw table of the local DuckDB (one ingest), through Arrow, into the work
        database: the rows first, `raw_loads` last, so models (which read recorded loads
        only) never see half a load, and the next command removes what a killed one left."""
        for table in ("raw_events", "raw_rejected", "raw_loads"):
            columns = [r[0] for r in local.execute(f"describe {table}").fetchall()]
            select = ", ".join(
                f"load_id + {int(load_id_offset)} as load_id" if c == "load_id"
                else f"cast({c} as varchar) as {c}" if c in ("properties", "traits", "context")
                else c for c in columns)
            arrow = local.sql(f"select {select} from {table}").to_arrow_table()
            try:
                self._session.insert_arrow(self.work_database, table, arrow)
            except Exception as exc:
                raise ArpuError(_first_line(exc), location=f"clickhouse {self.where}") from exc

    # -- publishing ------------------------------------------------------------------------
    def publish(self, names: list[str]) -> None:
        """Copy each work table into the published database and exchange it with the table
        readers see (a view model is published as a table)."""
        for name in names:
            new = f"__arpu_next_{name}"
            self._drop(new, self.published_database)
            source = self._q(name, self.work_database)
            target = self._q(new, self.published_database)
            if self._kind(name, self.work_database) == "view":
                self.execute(f"create table {target} {TABLE_ENGINE} as select * from {source}")
            else:  # the parts are hard links, not copies
                self.execute(f"create table {target} clone as {source}")
            self._swap_in(new, name, self.published_database)

    def close(self) -> None:
        self._session.close()


# -- sessions ------------------------------------------------------------------------------
class _Session:
    """What the engine needs of a connection: statements, queries, Arrow inserts."""

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: dict[str, Any] | None = None
              ) -> tuple[list[str], list[tuple]]:
        raise NotImplementedError

    def use(self, database: str) -> None:
        raise NotImplementedError

    def insert_arrow(self, database: str, table: str, arrow: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Embedded(_Session):
    """chdb in this process. chdb serves one data folder per process (sessions on the same
    folder share it) and locks it against other processes."""

    sessions: dict[Path, int] = {}  # sessions this process has open, per data folder

    def __init__(self, path: Path) -> None:
        try:
            from chdb import session
        except ModuleNotFoundError:
            raise UsageError("the clickhouse target needs chdb, which is not installed: "
                             "pip install 'arpu[clickhouse]'") from None
        path.mkdir(parents=True, exist_ok=True)
        self.path = path.resolve()
        if not _Embedded.sessions.get(self.path) and _locked_elsewhere(self.path):
            raise ArpuError("cannot open the embedded ClickHouse: another process has it open "
                            "(an arpu command still running?); embedded ClickHouse serves one "
                            "process at a time, a server any number", location=str(path))
        try:
            self.session: Any = session.Session(str(self.path))
        except RuntimeError as exc:
            why = ("this process already has another ClickHouse data folder open (chdb serves "
                   "one per process)" if "already initialized with path" in str(exc)
                   else _first_line(exc))
            raise ArpuError(f"cannot open the embedded ClickHouse: {why}",
                            location=str(path)) from None
        _Embedded.sessions[self.path] = _Embedded.sessions.get(self.path, 0) + 1
        for key, value in SETTINGS.items():
            self.session.query(f"set {key} = {_literal(value)}")

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.session.query(sql, "Null", params=params or None)

    def query(self, sql: str, params: dict[str, Any] | None = None
              ) -> tuple[list[str], list[tuple]]:
        return arrow_rows(self.session.query(sql, "ArrowTable", params=params or None))

    def use(self, database: str) -> None:
        self.session.query(f"use `{database}`")

    def insert_arrow(self, database: str, table: str, arrow: Any) -> None:
        import tempfile

        import pyarrow.parquet as pq

        if not arrow.num_rows:
            return
        with tempfile.TemporaryDirectory(dir=self.path) as tmp:
            file = Path(tmp) / f"{table}.parquet"
            pq.write_table(arrow, file)
            columns = ", ".join(f"`{c}`" for c in arrow.column_names)
            self.command(f"insert into `{database}`.`{table}` ({columns}) "
                         f"select {columns} from file({_literal(str(file))}, Parquet)")

    def close(self) -> None:
        session, self.session = getattr(self, "session", None), None
        if session is not None:
            session.close()
            _Embedded.sessions[self.path] -= 1


class _Server(_Session):
    """A ClickHouse server over HTTP (clickhouse-connect); the password from the environment."""

    def __init__(self, target: ClickHouseTarget) -> None:
        try:
            import clickhouse_connect
        except ModuleNotFoundError:
            raise UsageError("the clickhouse target needs clickhouse-connect for a server, "
                             "which is not installed: pip install 'arpu[clickhouse]'") from None
        try:
            self.client = clickhouse_connect.get_client(
                host=target.host, port=target.port, username=target.user,
                password=target.password or "", secure=target.secure, settings=SETTINGS,
                connect_timeout=10)
        except Exception as exc:  # the driver's message names host and user, not the password
            raise ArpuError(f"cannot connect to ClickHouse: {_first_line(exc)}",
                            location=f"{target.host}:{target.port}") from None

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.client.command(sql, parameters=params or None)

    def query(self, sql: str, params: dict[str, Any] | None = None
              ) -> tuple[list[str], list[tuple]]:
        result = self.client.query(sql, parameters=params or None)
        return list(result.column_names), [tuple(_plain(v) for v in row)
                                           for row in result.result_rows]

    def use(self, database: str) -> None:
        self.client.database = database

    def insert_arrow(self, database: str, table: str, arrow: Any) -> None:
        if arrow.num_rows:
            self.client.insert_arrow(table, arrow, database=database)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


# -- SQL ---------------------------------------------------------------------------------------
_TIMESTAMPS = ("DATETIME", "TIMESTAMP", "TIMESTAMPNTZ")



def as_written(select_sql: str, columns_of: Callable[[str], list[str]]) -> str:
    """A model's compiled SELECT, read by ClickHouse as the models mean it:
    - a column selected as `t.x`, or by `t.*` from a join, is named `x` (ClickHouse names it
      `t.x` when another table of the join has an `x`): `t.*` is expanded from the CTE or
      subquery it names, or from the table's columns (`columns_of`);
    - a comparison selected as a column is a Bool, as in the other engines (ClickHouse's
      comparisons give UInt8 0 or 1);
    - a timestamp keeps microseconds: `DateTime64(6, 'UTC')`, not `DateTime` (seconds)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.scope import traverse_scope

    tree = sqlglot.parse_one(select_sql, read="clickhouse")
    predicates = (exp.Predicate, exp.Connector, exp.Not)
    for scope in traverse_scope(tree):  # inner scopes first: a CTE is expanded before its use
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        joined = bool(select.args.get("joins"))
        named: list[Any] = []
        for e in select.expressions:
            if isinstance(e, exp.Column) and e.table and isinstance(e.this, exp.Star):
                names = _star_names(scope.sources.get(e.table), columns_of) if joined else None
                named += ([exp.alias_(exp.column(n, table=e.table, quoted=True), n, quoted=True)
                           for n in names] if names else [e])
            elif isinstance(e, exp.Column) and e.table:
                named.append(exp.alias_(e, e.name, quoted=True))
            elif isinstance(e, exp.Alias) and isinstance(e.this, predicates):
                named.append(exp.alias_(exp.cast(e.this, "Nullable(Bool)", dialect="clickhouse"),
                                        e.alias, quoted=True))
            else:
                named.append(e)
        select.set("expressions", named)
    for kind in tree.find_all(exp.DataType):
        if kind.is_type(*_TIMESTAMPS):
            micros = exp.DataType.build(TIMESTAMP, dialect="clickhouse")
            micros.set("nullable", kind.args.get("nullable"))
            kind.replace(micros)
    return tree.sql("clickhouse")


def _star_names(source: Any, columns_of: Callable[[str], list[str]]) -> list[str] | None:
    """The columns `t.*` stands for, or None when they are not known here."""
    from sqlglot import exp
    from sqlglot.optimizer.scope import Scope

    if isinstance(source, Scope):
        query: Any = source.expression
        names = list(query.named_selects)
        return names if names and "*" not in names else None
    if isinstance(source, exp.Table):
        return columns_of(source.name) or None
    return None


# -- values --------------------------------------------------------------------------------
def _bind(sql: str, params: list[Any]) -> tuple[str, dict[str, Any]]:
    """`?` placeholders (outside string literals) as ClickHouse's typed `{p0:Type}`."""
    if not params:
        return sql, {}
    values = iter(params)
    bound: dict[str, Any] = {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) != "?":
            return match.group(0)
        name = f"p{len(bound)}"
        value = next(values)
        bound[name] = value
        return "{" + f"{name}:{_type_of(value)}" + "}"

    return _PARAM.sub(replace, sql), bound


def _type_of(value: Any) -> str:
    if value is None:
        return "Nullable(String)"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float):
        return "Float64"
    if isinstance(value, dt.datetime):
        return TIMESTAMP
    if isinstance(value, dt.date):
        return "Date32"
    if isinstance(value, (list, tuple)):
        return f"Array({_type_of(value[0]) if value else 'String'})"
    return "String"


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process holds the folder's lock (ClickHouse flocks `status` while it
    serves a folder); asked before chdb, which would print its own error to stderr."""
    import fcntl

    status = path / "status"
    if not status.exists():
        return False
    with status.open("rb") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(file, fcntl.LOCK_UN)
    return False


def _literal(value: Any) -> str:
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(value: Any) -> Any:
    """Times as the other engines give them: naive, in UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _first_line(exc: BaseException) -> str:
    """The error's first line, without the whole query ClickHouse repeats `In scope`."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"\s*In scope .*?(\s\([A-Z_]+\))?$", r"\1", line)
