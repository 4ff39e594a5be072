"""Spark SQL through pyspark: local mode by default, or a cluster URL (spark://, sc://)."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config import SparkTarget
from runner.engines.base import Engine, TargetSql, arrow_rows
from runner.errors import ArpuError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlglot import exp

# Spark's own logging, quiet: arpu reports errors itself, one line each.
LOG4J2 = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


class SparkSql(TargetSql):
    """Spark SQL (and Databricks, its dialect): an exact median is `percentile(x, p)`; the
    time spine is a `sequence` of days exploded."""

    def day_spine(self, bounds: str) -> exp.Query | None:
        """The digits' five cross joins are four broadcast joins to Spark: 0.4 s a query,
        where an exploded sequence takes 0.1 s. No rows when there are no bounds (nulls) or
        `lo` is after `hi`, as the digits give."""
        import sqlglot

        return sqlglot.parse_one(
            f"select cast(s.d as timestamp) as `day` from {bounds} as b lateral view explode("
            "case when b.lo <= b.hi then sequence(cast(b.lo as date), cast(b.hi as date), "
            "interval 1 day) end) s as d", read="spark")  # type: ignore[return-value]

    def percentile(self, node: exp.WithinGroup) -> exp.Expression:
        from sqlglot import exp

        fraction = node.this.this
        if isinstance(node.this, exp.PercentileCont):
            value = node.expression.expressions[0].this
            return exp.Anonymous(this="percentile", expressions=[value, fraction])
        node.set("this", exp.Anonymous(this="percentile_disc", expressions=[fraction]))
        return node


SQL = SparkSql("spark")  # this target's SQL differences (runner.engines.target_sql)


def _first_line(exc: Exception) -> str:
    """What went wrong, in one line: a JVM error's own line rather than py4j's "An error
    occurred while calling o47.sql." before it."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("An error occurred while calling"):
        return lines[1].removeprefix(": ")
    return lines[0] if lines else type(exc).__name__


@contextmanager
def _errors() -> Iterator[None]:
    """Spark's and the JVM's errors as one line (`spark.sql` raises what analysis finds, the
    rows' collection what running finds)."""
    try:
        yield
    except Exception as exc:
        raise ArpuError(_first_line(exc), location="spark") from exc


JAVA_OPTIONS = "spark.driver.extraJavaOptions"  # a target's are added to arpu's own


class SparkEngine(Engine):
    dialect = "spark"
    uses_pyspark = True

    def __init__(self, project_dir: Path, target: SparkTarget) -> None:
        os.environ.setdefault("PYSPARK_PYTHON", "python3")
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        logging.getLogger("py4j").setLevel(logging.ERROR)
        logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", category=FutureWarning, module="pyspark")
        warnings.filterwarnings("ignore", category=UserWarning, module="pyspark")
        from pyspark.sql import SparkSession

        self.database = target.database
        self.concurrency = target.concurrency
        warehouse = Path(target.warehouse_dir)
        if not warehouse.is_absolute():
            warehouse = project_dir / warehouse
        warehouse.mkdir(parents=True, exist_ok=True)
        self.warehouse = warehouse
        builder = SparkSession.builder.appName("arpu").config("spark.sql.session.timeZone", "UTC")
        java_options = ""  # arpu's own JVM options (local mode)
        if target.master.startswith("sc://"):
            builder = builder.remote(target.master)
        else:
            metastore = warehouse.parent / "spark-metastore"
            log_config = warehouse.parent / "spark-log4j2.properties"
            log_config.write_text(LOG4J2)
            java_options = (f"-Dderby.system.home={warehouse.parent} "
                            f"-Dlog4j2.configurationFile=file:{log_config}")
            builder = (
                builder.master(target.master)
                .config("spark.sql.warehouse.dir", str(warehouse))
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.shuffle.partitions", "8")
                .config("spark.driver.memory", os.environ.get("ARPU_SPARK_DRIVER_MEMORY", "2g"))
                .config("spark.sql.ansi.enabled", "false")
                .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                        f"jdbc:derby:;databaseName={metastore};create=true")
                .config(JAVA_OPTIONS, java_options)
                .config("spark.log.structuredLogging.enabled", "false")
                .enableHiveSupport()
            )
        for key, value in target.conf.items():  # the target's win, JVM options add to arpu's
            builder = builder.config(key, f"{java_options} {value}".strip()
                                     if key == JAVA_OPTIONS else value)
        try:
            self.spark = builder.getOrCreate()
        except Exception as exc:  # JVM or cluster not reachable
            raise ArpuError(f"cannot start Spark: {_first_line(exc)}",
                            location=target.master) from None
        self.spark.sparkContext.setLogLevel("ERROR")
        if not self.spark.catalog.databaseExists(self.database):
            self.spark.sql(f"create database {self.quote(self.database)}")
        self.spark.sql(f"use {self.quote(self.database)}")

    def gx_datasource(self, context: Any) -> tuple[Any, str, None]:
        return context.data_sources.add_spark(name="arpu"), "dataframe", None

    def gx_dataframe(self, table: Any) -> Any:
        return self.spark.table(table.sql(dialect="spark"))

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def _run(self, sql: str, params: list[Any] | None = None) -> Any:
        with _errors():
            return self.spark.sql(sql, args=params) if params else self.spark.sql(sql)

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        frame = self._run(sql, params)
        with _errors():
            frame.collect()

    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Rows through Arrow, column by column (pyspark 4; 3.5 collects Row objects, about
        twice as slow); times as naive UTC, the session's zone, whatever the local zone."""
        frame = self._run(sql, params)
        with _errors():
            if not hasattr(frame, "toArrow"):
                return list(frame.columns), [tuple(r) for r in frame.collect()]
            return arrow_rows(frame.toArrow())

    def materialize(self, name: str, select_sql: str, kind: str,
                    after: list[str] | None = None) -> int | None:
        """Spark's Parquet tables have no transactions: the watermark follows the data."""
        rows = self._materialize(name, select_sql, kind)
        for statement in after or []:
            self._run(statement)
        return rows

    def _materialize(self, name: str, select_sql: str, kind: str) -> int | None:
        q = f"{self.quote(self.database)}.{self.quote(name)}"
        if self.relation_exists(name):
            is_view = self.spark.catalog.getTable(f"{self.database}.{name}").tableType == "VIEW"
            self._run(f"drop {'view' if is_view else 'table'} {q}")
        if kind == "view":
            self._run(f"create view {q} as {select_sql}")
            return None
        self._run(f"create table {q} using parquet as {select_sql}")
        return int(self._run(f"select count(*) from {q}").collect()[0][0])

    def relation_exists(self, name: str) -> bool:
        return bool(self.spark.catalog.tableExists(name, self.database))

    def raw_table_ddl(self, statement: str) -> str:
        """Spark's JSON is text; its tables are Parquet."""
        return (statement.replace("TIMESTAMP_NTZ", "TIMESTAMP").replace(" JSON", " STRING")
                + " USING PARQUET")

    def delete_where(self, table: str, condition: str) -> None:
        """Parquet tables have no DELETE: the rows to keep become the table."""
        q = f"{self.quote(self.database)}.{self.quote(table)}"
        keep = f"{self.quote(self.database)}.{self.quote('__arpu_keep_' + table)}"
        self._run(f"drop table if exists {keep}")
        self._run(f"create table {keep} using parquet as select * from {q} "
                  f"where not coalesce({condition}, false)")
        self._run(f"drop table {q}")
        self._run(f"alter table {keep} rename to {q}")

    def append_raw(self, local: Any, load_id_offset: int) -> None:
        """Each raw table of the local DuckDB goes through a Parquet file into the Spark table."""
        with tempfile.TemporaryDirectory(dir=self.warehouse.parent) as tmp:
            for table in ("raw_events", "raw_rejected", "raw_loads"):
                path = Path(tmp) / f"{table}.parquet"
                columns = [r[0] for r in local.execute(f"describe {table}").fetchall()]
                select = ", ".join(
                    f"load_id + {load_id_offset} as load_id" if c == "load_id"
                    else f"cast({c} as varchar) as {c}" if c in ("properties", "traits", "context")
                    else c for c in columns)
                local.execute(f"copy (select {select} from {table}) to '{path}' (format parquet)")
                frame = self.spark.read.parquet(str(path))
                target_columns = self.spark.table(f"{self.database}.{table}").columns
                frame.select(*target_columns).write.insertInto(f"{self.database}.{table}")

    def close(self) -> None:
        # The session stays up for the process (Spark's start-up is the expensive part).
        pass
