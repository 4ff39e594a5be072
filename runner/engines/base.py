"""What every execution target provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner.dialect import SOURCE_DIALECT, quoted, transpile

if TYPE_CHECKING:
    from sqlglot import exp

def arrow_rows(table: Any) -> tuple[list[str], list[tuple]]:
    """A pyarrow Table as `fetch` returns it: column names, and rows of Python values built
    column by column; a zoned timestamp becomes naive UTC, as every engine's times are."""
    import pyarrow as pa

    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp(column.type.unit))
        columns.append(column.to_pylist())
    return list(table.column_names), list(zip(*columns, strict=True))


WATERMARKS = "arpu_watermarks"
# in the models' dialect (DuckDB); each engine transpiles it
WATERMARKS_DDL = (f"create table if not exists {WATERMARKS} "
                  "(model varchar, load_id bigint, built_at timestamp)")


# The raw tables ingest writes (runner/ingest/), in the models' dialect; each engine transpiles
RAW_TABLES_DDL = """
create table if not exists raw_events (
    load_id bigint, loaded_at timestamp, source_file varchar, line_number bigint,
    record_number bigint, message_id varchar, message_type varchar, event varchar,
    user_id varchar, anonymous_id varchar, event_ts timestamp, received_at timestamp,
    sent_at timestamp, original_ts timestamp, properties json, traits json, context json,
    content_id varchar
);
create table if not exists raw_rejected (
    load_id bigint, loaded_at timestamp, source_file varchar, line_number bigint,
    raw varchar, reason varchar
);
create table if not exists raw_loads (
    load_id bigint, loaded_at timestamp, source_file varchar, bytes bigint,
    lines_read bigint, loaded bigint, rejected bigint
);
"""

# Loads of the bundled sample (auto-loaded by a fresh build, or `arpu seed`): the first ingest
# of other files removes them. `removed` rows stay until a build has rebuilt without them.
SAMPLE_LOADS = "raw_sample_loads"
SAMPLE_LOADS_DDL = f"create table if not exists {SAMPLE_LOADS} (load_id bigint, removed boolean);"


class TargetSql:
    """What a target's SQL needs beyond sqlglot's translation from the source dialect, for the
    queries arpu writes as sqlglot trees (runner/metrics/sql.py). Known without a connection:
    compile-only targets have these and nothing else. The defaults are the source dialect's:
    a target whose SQL sqlglot writes as arpu needs overrides nothing."""

    week_unit = "WEEK"  # the unit that truncates to weeks starting on Monday
    # what a cast to TIMESTAMP becomes (in the target's dialect) when sqlglot's type has no
    # microseconds; None: sqlglot's
    timestamp_type: str | None = None
    exact_percentiles = True  # PERCENTILE_CONT/DISC exist; else median measures are refused

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def day_spine(self, bounds: str) -> exp.Query | None:
        """The metrics' time spine, one `day` (a TIMESTAMP at midnight) per day from `lo` to
        `hi` of the CTE `bounds`, where the target has a better way than the portable one
        (None: a digits table cross-joined five times)."""
        return None

    def percentile(self, node: exp.WithinGroup) -> exp.Expression:
        """An exact percentile, `PERCENTILE_CONT|DISC(p) WITHIN GROUP (ORDER BY x)`, as the
        target computes it (the node itself when sqlglot translates it)."""
        if not self.exact_percentiles:
            from runner.errors import UsageError

            raise UsageError(f"median and percentile measures have no exact form on "
                             f"{self.dialect}", location="--dialect")
        return node


class Engine(ABC):
    dialect: str
    concurrency = 1  # models a build may run at once (each thread its own connection)
    # uniqueness pre-checks may count distinct 64-bit hash() values (runner/quality/sqlcheck.py)
    hashes_uniqueness = False
    ingests_in_place = False  # ingest loads into `self.con` (else into a local DuckDB, appended)

    @abstractmethod
    def execute(self, sql: str, params: list[Any] | None = None) -> None: ...

    @abstractmethod
    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Columns and rows of a query."""

    @abstractmethod
    def materialize(self, name: str, select_sql: str, kind: str,
                    after: list[str] | None = None) -> int | None:
        """Create or replace `name` as a table or view of `select_sql`, running the `after`
        statements in the same transaction; rows when known."""

    supports_merge = False
    insert_by_name = True  # `insert into t by name select ...` (the source dialect's)

    def merge(self, name: str, select_sql: str, keys: list[str],
              after: list[str] | None = None) -> int:
        """Replace the rows of `name` whose `keys` appear in `select_sql` by its rows, in one
        transaction with the `after` statements; the number of rows merged."""
        new = f"__arpu_new_{name}"
        return self._replace_rows(self._merge_statements(name, new, select_sql, keys), new,
                                  [new], after)

    # delete+insert increments (runner/project.py's incremental_strategy); an engine without
    # them builds those models whole on every build
    supports_delete_insert = False

    def delete_insert(self, name: str, select_sql: str, touched_sql: str, by: list[str],
                      after: list[str] | None = None) -> int:
        """Delete the rows of `name` whose `by` columns are among the rows of `touched_sql`,
        insert the rows of `select_sql` (both evaluated before the delete), run the `after`
        statements, in one transaction; the number of rows inserted."""
        new, touched = f"__arpu_new_{name}", f"__arpu_touched_{name}"
        return self._replace_rows(
            self._delete_insert_statements(name, new, touched, select_sql, touched_sql, by),
            new, [new, touched], after)

    def _replace_rows(self, statements: list[str], counted: str, temporary: list[str],
                      after: list[str] | None) -> int:
        """What merge and delete+insert share: `statements`, then the `after` ones, in one
        transaction; the rows of the table `counted`, then the `temporary` tables dropped.
        Engines that merge implement it with their transactions."""
        raise NotImplementedError

    def _delete_insert_statements(self, name: str, new: str, touched: str, select_sql: str,
                                  touched_sql: str, by: list[str]) -> list[str]:
        q, n, t = self.quote(name), self.quote(new), self.quote(touched)
        match = " and ".join(f"{q}.{self.quote(k)} = k.{self.quote(k)}" for k in by)
        return [f"create temp table {n} as {select_sql}",
                f"create temp table {t} as {touched_sql}",
                f"delete from {q} using {t} as k where {match}",
                f"insert into {q} by name select * from {n}" if self.insert_by_name
                else f"insert into {q} select * from {n}"]

    def _merge_statements(self, name: str, new: str, select_sql: str,
                          keys: list[str]) -> list[str]:
        q, n = self.quote(name), self.quote(new)
        match = " and ".join(f"{q}.{self.quote(k)} = n.{self.quote(k)}" for k in keys)
        return [f"create temp table {n} as {select_sql}",
                f"delete from {q} using {n} as n where {match}",
                f"insert into {q} by name select * from {n}" if self.insert_by_name
                else f"insert into {q} select * from {n}"]

    # how a model's watermark is read from its rows in the watermarks table (one row each
    # here: `watermark_statements` replace it in the model's transaction)
    watermark_aggregate = "max(load_id)"

    def watermarks(self) -> dict[str, int]:
        """The last load each incremental model processed (a model not named: build it
        whole), read in one query."""
        if not self.relation_exists(WATERMARKS):
            return {}
        rows = self.fetch(f"select model, {self.watermark_aggregate} "
                          f"from {self.watermarks_table()} group by model")[1]
        return {model: int(load_id) for model, load_id in rows}

    def watermarks_table(self) -> str:
        return WATERMARKS

    def watermark_statements(self, model: str, load_id: int) -> list[str]:
        """Record `load_id` as processed by `model` (run in the model's own transaction)."""
        from sqlglot import exp

        name = exp.Literal.string(model).sql("duckdb")
        ddl = transpile(WATERMARKS_DDL, self.dialect)
        return [ddl, f"delete from {WATERMARKS} where model = {name}",
                f"insert into {WATERMARKS} values ({name}, {int(load_id)}, current_timestamp)"]

    @abstractmethod
    def relation_exists(self, name: str) -> bool: ...

    def existing(self, names: list[str]) -> list[str]:
        """Those of `names` that exist, in their order (an engine may ask once for all)."""
        return [name for name in names if self.relation_exists(name)]

    @abstractmethod
    def close(self) -> None: ...

    def ensure_raw_tables(self) -> None:
        """Create raw_events, raw_rejected and raw_loads if missing (RAW_TABLES_DDL)."""
        import sqlglot

        for statement in sqlglot.transpile(RAW_TABLES_DDL + SAMPLE_LOADS_DDL, read=SOURCE_DIALECT,
                                           write=self.dialect):
            self.execute(self.raw_table_ddl(statement))

    def raw_table_ddl(self, statement: str) -> str:
        """A raw table's `create table`, as sqlglot wrote it for the target, made what the
        target stores raw data in."""
        return statement

    def delete_where(self, table: str, condition: str) -> None:
        """Delete the rows of a raw table that match `condition` (SQL in the models' dialect)."""
        self.execute(transpile(f"delete from {table} where {condition}", self.dialect))

    def remove_loads(self, load_ids: list[int]) -> None:
        """Every raw row of these loads (the bundled sample, when a user's data arrives)."""
        ids = ", ".join(str(int(i)) for i in load_ids) or "null"
        for table in ("raw_events", "raw_rejected", "raw_loads"):
            self.delete_where(table, f"load_id in ({ids})")

    def append_raw(self, local: Any, load_id_offset: int) -> None:
        """Copy the raw tables of a local DuckDB connection (one ingest) into this target."""
        raise NotImplementedError(f"ingest into {self.dialect} is not supported")

    def begin_build(self, carry: list[str], incremental: list[str]) -> None:
        """Prepare where the build writes. `carry`: models the build does not run, whose
        published relations it keeps; `incremental`: incremental models that may continue from
        their watermark. PostgreSQL refuses here a schema it could not publish to."""
        return None

    def publish(self, names: list[str]) -> None:
        """Make the built relations visible to readers, all at once (DuckDB: a new file renamed
        over the published one; PostgreSQL: views pointed at snapshots of them); Spark, which
        replaces each relation in place, has nothing more to do."""
        return None

    def abandon_build(self) -> None:
        """Forget what a build that will not be published wrote, where that is apart."""
        return None

    # -- Great Expectations (runner/quality/gx.py) --------------------------------------------
    uses_pyspark = False  # else pyspark is hidden while GX imports (it probes it: ~0.5 s)

    def gx_prepare(self) -> None:
        """Import what `gx_datasource` needs, on the thread that loads GX."""
        return None

    def gx_datasource(self, context: Any) -> tuple[Any, str, Callable[[], None] | None]:
        """Great Expectations' datasource on this target in the ephemeral `context`, its kind
        ("sql" | "dataframe") and what to close when validation ends (or None)."""
        from runner.errors import ArpuError

        raise ArpuError(f"validation is not supported on {self.dialect} targets yet")

    def gx_dataframe(self, table: Any) -> Any:
        """A "dataframe" datasource's batch: the data frame of `table` (a sqlglot Table)."""
        raise NotImplementedError

    def quote(self, name: str) -> str:
        return quoted(name)

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        rows = self.fetch(sql, params)[1]
        return rows[0][0] if rows else None
