"""Each target's SQL differences live in its own file in runner/engines/ and are found without a
connection: `target_sql` imports that file alone (no driver), compile-only targets included, and
what each file says reaches the metrics layer's SQL and the engines' own statements."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.metric_tables import LAYER
from support.project import ROOT, ProjectHarness, run_arpu

from runner.engines import TARGETS, target_sql
from runner.engines.duckdb import DuckDBEngine
from runner.engines.postgres import PostgresEngine
from runner.engines.spark import SparkEngine
from runner.errors import UsageError
from runner.metrics.plan import QueryRequest

DRIVERS = ("pyspark", "psycopg", "chdb", "clickhouse_connect")
# the files a target's SQL differences come from (besides base.py); DuckDB is the source dialect
FILES = {"duckdb": set(), "databricks": {"databricks", "spark"}}


def compiled(metric: str, dialect: str, **request: object) -> str:
    return LAYER.compile(QueryRequest([metric], **request), dialect,  # type: ignore[arg-type]
                         lambda m: f'"{m}"', pretty=False).sql


@pytest.mark.parametrize("dialect", TARGETS)
def test_a_target_imports_its_own_file_and_no_driver(dialect: str) -> None:
    probe = ("import sys\nfrom runner.engines import target_sql\n"
             f"assert target_sql({dialect!r}).dialect == {dialect!r}\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('runner.engines.'))))\n"
             f"print(' '.join(m for m in {DRIVERS!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True).stdout.splitlines()
    files = FILES.get(dialect, {dialect})
    assert out[0].split() == sorted(f"runner.engines.{f}" for f in {"base", *files})
    assert out[1] == ""


def test_an_unknown_dialect_names_the_known_ones() -> None:
    with pytest.raises(UsageError) as error:
        target_sql("oracle")
    assert str(error.value) == ("--dialect: unknown dialect 'oracle' (duckdb, postgres, spark, "
                                "snowflake, bigquery, redshift, trino, clickhouse, databricks)")


@pytest.mark.parametrize("dialect", ["postgres", "snowflake", "redshift"])
def test_percentiles_as_written(dialect: str) -> None:
    assert "PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY s.revenue" in compiled("revenue_p75",
                                                                                 dialect)
    assert "PERCENTILE_DISC(0.75) WITHIN GROUP (ORDER BY s.revenue" in compiled(
        "revenue_p75_disc", dialect)


@pytest.mark.parametrize("dialect", ["spark", "databricks"])
def test_spark_percentiles(dialect: str) -> None:
    assert "PERCENTILE(s.revenue, 0.75)" in compiled("revenue_p75", dialect)
    assert "PERCENTILE_DISC(0.75) WITHIN GROUP (ORDER BY s.revenue" in compiled(
        "revenue_p75_disc", dialect)


def test_clickhouse_percentiles_and_timestamps() -> None:
    sql = compiled("revenue_p75", "clickhouse", start_time=dt.datetime(2026, 2, 1))
    assert "quantileExactInclusive(0.75)(s.revenue)" in sql
    assert "CAST('2026-02-01 00:00:00' AS Nullable(DateTime64(6)))" in sql
    with pytest.raises(UsageError, match="discrete percentiles have no exact form on clickhouse"):
        compiled("revenue_p75_disc", "clickhouse")


@pytest.mark.parametrize("dialect", ["bigquery", "trino"])
def test_no_exact_percentile_is_refused(dialect: str) -> None:
    for metric in ("revenue_median", "revenue_p75", "revenue_p75_disc"):
        with pytest.raises(UsageError, match=f"no exact form on {dialect}"):
            compiled(metric, dialect)
    assert "revenue" in compiled("revenue", dialect)


@pytest.mark.parametrize("dialect", TARGETS)
def test_weeks_start_on_monday(dialect: str) -> None:
    """BigQuery's WEEK starts on Sunday: its file says ISOWEEK; every other target's WEEK is
    Monday's. Timestamps stay sqlglot's but on ClickHouse."""
    sql = compiled("revenue", dialect, group_by=["metric_time__week"],
                   start_time=dt.datetime(2026, 2, 2))
    assert ("ISOWEEK" in sql) == (dialect == "bigquery")
    assert ("DateTime64(6)" in sql) == (dialect == "clickhouse")


@pytest.mark.parametrize("dialect", TARGETS)
def test_the_time_spine_is_a_series_on_spark_and_postgres(dialect: str) -> None:
    """Spark's file gives the days as an exploded sequence (the digits' cross joins are
    broadcast joins there), PostgreSQL's as generate_series; elsewhere the portable digits
    table, which their queries drop."""
    sql = compiled("revenue_7d", dialect, group_by=["metric_time__day"])
    spark = dialect in ("spark", "databricks")
    postgres = dialect == "postgres"
    assert ("SEQUENCE(" in sql) == spark
    assert ("GENERATE_SERIES(" in sql) == postgres
    assert ("arpu_digits" in sql) != (spark or postgres)
    assert "arpu_spine" in sql


def test_merge_inserts_by_name_only_where_the_engine_can() -> None:
    """DuckDB (the base's default) matches the new rows' columns by name; PostgreSQL, which has
    no `by name`, by position."""
    for engine, by_name in ((DuckDBEngine, True), (PostgresEngine, False)):
        statements = object.__new__(engine)._merge_statements("t", "n", "select 1 as k", ["k"])
        assert statements[-1] == ('insert into "t" by name select * from "n"' if by_name
                                  else 'insert into "t" select * from "n"')


def test_spark_raw_tables_are_parquet() -> None:
    ddl = object.__new__(SparkEngine).raw_table_ddl(
        "CREATE TABLE IF NOT EXISTS raw_events (properties JSON, received_at TIMESTAMP_NTZ)")
    assert ddl == ("CREATE TABLE IF NOT EXISTS raw_events (properties STRING, received_at "
                   "TIMESTAMP) USING PARQUET")
    assert object.__new__(PostgresEngine).raw_table_ddl("CREATE TABLE t (a JSON)") == \
        "CREATE TABLE t (a JSON)"


def test_arpu_query_compiles_for_any_target_without_connecting(tmp_path: Path) -> None:
    """`arpu query --explain --target X`: compile-only targets, and a PostgreSQL target nothing
    listens on, write their SQL; nothing connects."""
    project = ProjectHarness(tmp_path / "project")
    shutil.copytree(ROOT / "metrics", project.root / "metrics")
    config = project.root / "arpu.yml"
    text = config.read_text()
    assert "port: 5432" in text and "  trino: {type: trino}\n" in text  # else nothing changes
    text = text.replace("port: 5432", "port: 1")
    config.write_text(text.replace("  trino: {type: trino}\n",
                                   "  trino: {type: trino}\n  databricks: {type: databricks}\n"))
    week = ("query", "-m", "arpu", "-g", "metric_time__week", "--explain", "--target")
    median = ("query", "-m", "median_order_revenue", "--explain", "--target")
    out = run_arpu(project.root, *week, "bigquery")
    assert out.returncode == 0 and "ISOWEEK" in out.stdout, out.stderr
    out = run_arpu(project.root, *median, "bigquery")
    assert out.returncode == 2
    assert "median and percentile measures have no exact form on bigquery" in out.stderr
    out = run_arpu(project.root, *median, "databricks")
    assert out.returncode == 0 and "PERCENTILE(" in out.stdout, out.stderr
    out = run_arpu(project.root, *median, "postgres")
    assert out.returncode == 0 and "PERCENTILE_CONT(0.5) WITHIN GROUP" in out.stdout, out.stderr
