"""The same metric queries give the same numbers on DuckDB, PostgreSQL, Spark and ClickHouse:
(1) generated rows loaded into each engine, every metric type compiled for its dialect and
compared with the plain-Python reference; (2) the bundled sample built on each target with
`arpu build --target T`, the recipe's metrics and the saved queries' exports compared with
DuckDB's."""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reference.metrics_ref import Reference, sort_key
from sqlglot import exp
from support.compare import plain, same
from support.engines import sample_on
from support.metric_tables import LAYER, START, TABLES
from support.project import ROOT

from runner.metrics.plan import QueryRequest

pytestmark = [pytest.mark.slow]
Runner = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]
Namer = Callable[[str], str]

QUERIES = [  # (metrics, group_by, where, start, end): every metric type and aggregation
    (["revenue", "orders", "buyers", "revenue_avg", "revenue_min", "revenue_max", "gifts"],
     ["user__segment"], [], None, None),
    (["revenue_median", "revenue_p75"], ["metric_time__month"], [], None, None),
    (["aov", "eur_share", "revenue_per_viewer", "segment_a_revenue"], ["metric_time__week"],
     [], None, None),
    (["revenue_wow", "revenue_3_days_ago", "aov_last_week"], ["metric_time__day"], [], None,
     None),
    (["revenue_last_month", "revenue_at_month_start"], ["metric_time__month"], [], None, None),
    (["revenue_at_month_start", "revenue_wow"], ["metric_time__week"], [], None, None),
    (["revenue_7d", "revenue_mtd", "revenue_to_date"], ["metric_time__day", "user"], [], None,
     None),
    (["revenue_7d_last", "buyers_14d_avg", "revenue_7d"], ["metric_time__month"], [], None,
     None),
    (["view_to_buy", "view_to_buy_open", "view_to_buy_ever"], ["metric_time__week", "user"], [],
     None, None),
    (["view_to_buy", "view_to_buy_ever", "revenue"], [], [], None, None),
    (["orders_filled", "eur_orders"], ["metric_time__day"], [],
     START + dt.timedelta(days=5), START + dt.timedelta(days=40)),
    (["revenue", "viewers"], ["metric_time__week", "user__segment"],
     ["{{ Dimension('user__segment') }} is not null",
      "{{ TimeDimension('metric_time', 'day') }} >= '2026-02-09'"], None, None),
]


def generated(seed: int = 19) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    users = ["u1", "u2", "u3", "u4", "u5", "u6", None]

    def when() -> dt.datetime | None:
        if rng.random() < 0.05:
            return None
        return START + dt.timedelta(hours=12 * rng.randrange(100), minutes=rng.choice([0, 30]))

    def money() -> float | None:
        return None if rng.random() < 0.05 else rng.randrange(400) / 4

    return {
        "p_orders": [{"order_id": f"o{i}", "user_key": rng.choice(users), "ordered_at": when(),
                      "revenue": money(), "currency": rng.choice(["EUR", "USD", None]),
                      "is_gift": rng.choice([True, False, None])} for i in range(60)],
        "p_users": [{"user_key": f"u{i}", "segment": rng.choice(["a", "b", None])}
                    for i in range(1, 6)],
        "p_views": [{"view_id": f"v{i}", "user_key": rng.choice(users), "viewed_at": when(),
                     "category": rng.choice(["x", "y", None])} for i in range(60)],
        "p_lines": [{"line_id": f"l{i}", "order_id": f"o{rng.randrange(60)}",
                     "user_key": rng.choice(users), "purchased_at": when(),
                     "category": rng.choice(["x", "y", None]), "price": money()}
                    for i in range(60)],
    }


DATA = generated()


def literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, float):  # typed: Spark reads 1.5 as a DECIMAL
        return exp.Cast(this=exp.Literal.number(value), to=exp.DataType.build("double"))
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, dt.datetime):
        return exp.Cast(this=exp.Literal.string(value.isoformat(sep=" ")),
                        to=exp.DataType.build("timestamp"))
    return exp.Literal.string(str(value))


def inserts(dialect: str, table: str) -> Iterator[str]:
    columns = TABLES[table]
    rows = DATA[table]
    for start in range(0, len(rows), 50):
        values = exp.values([tuple(literal(r[c]) for c in columns) for r in
                             rows[start:start + 50]])
        yield exp.insert(values, table, columns=list(columns)).sql(dialect)


# -- the engines, each with the generated tables ---------------------------------------------
@pytest.fixture(scope="module")
def duckdb_engine() -> Iterator[tuple[Runner, Namer]]:
    import duckdb

    con = duckdb.connect()
    for name, columns in TABLES.items():
        con.execute(f"create table {name} (" + ", ".join(f"{c} {t}" for c, t in columns.items())
                    + ")")
        for sql in inserts("duckdb", name):
            con.execute(sql)

    def run(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = con.execute(sql)
        return [d[0] for d in cursor.description], cursor.fetchall()

    yield run, lambda m: f'"{m}"'
    con.close()


@pytest.fixture(scope="module")
def postgres_engine() -> Iterator[tuple[Runner, Namer]]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"arpu_metrics_{os.getpid()}"
    con = psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True)
    types = {"varchar": "text", "double": "double precision", "timestamp": "timestamp",
             "boolean": "boolean"}
    con.execute(f'drop schema if exists "{schema}" cascade')
    con.execute(f'create schema "{schema}"')
    con.execute(f'set search_path to "{schema}"')
    for name, columns in TABLES.items():
        con.execute(f"create table {name} (" + ", ".join(f"{c} {types[t]}" for c, t in
                                                        columns.items()) + ")")
        for sql in inserts("postgres", name):
            con.execute(sql)

    def run(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = con.execute(sql)
        return [d.name for d in cursor.description or []], cursor.fetchall()

    yield run, lambda m: f'"{schema}"."{m}"'
    con.execute(f'drop schema if exists "{schema}" cascade')
    con.close()


@pytest.fixture  # chdb opens one data folder per process: closed before the sample's
def clickhouse_engine(tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[Runner, Namer]]:
    pytest.importorskip("chdb")
    from runner.config import ClickHouseTarget
    from runner.engines.clickhouse import ClickHouseEngine

    folder = tmp_path_factory.mktemp("clickhouse")
    engine = ClickHouseEngine(folder, ClickHouseTarget(path=str(folder / "data")))
    types = {"varchar": "Nullable(String)", "double": "Nullable(Float64)",
             "timestamp": "Nullable(DateTime64(6))", "boolean": "Nullable(Bool)"}
    for name, columns in TABLES.items():
        engine.execute(f"create table {name} (" + ", ".join(
            f"{c} {types[t]}" for c, t in columns.items()) + ") engine = MergeTree order by "
            "tuple()")
        for sql in inserts("clickhouse", name):
            engine.execute(sql)
    yield engine.fetch, lambda m: f'"{m}"'
    engine.close()


@pytest.fixture(scope="module")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runner, Namer]]:
    pytest.importorskip("pyspark")
    from runner.config import load_config
    from runner.engines.spark import SparkEngine

    folder = tmp_path_factory.mktemp("spark")
    # arpu.yml's target, as the other Spark tests' builds use: whichever starts this process's
    # session first, it has that target's settings (test_engines checks them)
    target = load_config(ROOT).targets["spark"].model_copy(update={
        "database": f"arpu_metrics_{os.getpid()}", "warehouse_dir": str(folder / "warehouse")})
    engine = SparkEngine(folder, target)
    for name, columns in TABLES.items():  # the rows as a temporary view
        rows = [tuple(literal(r[c]) for c in columns) for r in DATA[name]]
        values = exp.values(rows, alias="t", columns=list(columns))
        engine.execute(f"create or replace temporary view {name} as "
                       + exp.select("*").from_(values).sql("spark"))
    yield engine.fetch, lambda m: f'"{m}"'
    engine.close()


def check(dialect: str, engine: tuple[Runner, Namer]) -> None:
    run, namer = engine
    reference = Reference(LAYER.manifest, DATA)
    for metrics, group_by, where, start, end in QUERIES:
        request = QueryRequest(list(metrics), list(group_by), list(where), [], None, start, end)
        sql = LAYER.compile(request, dialect, namer).sql
        columns, rows = run(sql)
        got = sorted((dict(zip(columns, (plain(v) for v in row), strict=True))
                      for row in rows), key=lambda r: sort_key(tuple(r[k] for k in group_by)))
        want = reference.query(list(metrics), list(group_by), list(where), start, end)
        where_ = f"{dialect}: {metrics} by {group_by}"
        assert [tuple(r[k] for k in group_by) for r in got] == \
            [tuple(r[k] for k in group_by) for r in want], where_
        for row, expected in zip(got, want, strict=True):
            for metric in metrics:
                assert same(row[metric], expected[metric]), \
                    f"{where_}: {metric} {row[metric]!r} != {expected[metric]!r} at {row}"


def test_duckdb(duckdb_engine: tuple[Runner, Namer]) -> None:
    check("duckdb", duckdb_engine)


@pytest.mark.postgres
def test_postgres(postgres_engine: tuple[Runner, Namer]) -> None:
    check("postgres", postgres_engine)


def test_clickhouse(clickhouse_engine: tuple[Runner, Namer]) -> None:
    check("clickhouse", clickhouse_engine)


@pytest.mark.spark
def test_spark(spark_engine: tuple[Runner, Namer]) -> None:
    check("spark", spark_engine)


# -- the sample, built on each target --------------------------------------------------------
def compare_sample(tmp_path_factory: pytest.TempPathFactory, target: str) -> None:
    """The sample with metrics/ built on DuckDB and on `target`: the same answers."""
    expected = sample_on(tmp_path_factory, "duckdb").answers
    got = sample_on(tmp_path_factory, target).answers
    for i, rows in expected.items():
        assert len(got[i]) == len(rows), (target, i)
        for row, want in zip(got[i], rows, strict=True):
            for column, value in want.items():
                assert same(row[column], value), (target, i, column, row, want)


@pytest.mark.postgres
def test_sample_on_postgres(tmp_path_factory: pytest.TempPathFactory) -> None:
    compare_sample(tmp_path_factory, "postgres")


@pytest.mark.clickhouse
def test_sample_on_clickhouse(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Built in a process of its own (support/engines.py): chdb serves one data folder per
    process."""
    pytest.importorskip("chdb")
    compare_sample(tmp_path_factory, "clickhouse")


@pytest.mark.spark
def test_sample_on_spark(tmp_path_factory: pytest.TempPathFactory) -> None:
    compare_sample(tmp_path_factory, "spark")
