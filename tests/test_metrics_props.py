"""Property tests: on generated rows, every metric type (tests/fixtures/metrics_props/) asked
by arbitrary grains, slices, filters and time ranges gives what the plain-Python reference
(tests/reference/metrics_ref.py) computes from the same rows. On DuckDB, through the same
compile path `arpu query` takes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference.metrics_ref import Reference, RefError, sort_key
from support.compare import same
from support.metric_tables import LAYER, START, TABLES
from support.project import FIXTURES

from runner.errors import UsageError
from runner.metrics.plan import QueryRequest
from runner.metrics.query import SemanticLayer

METRICS = sorted(LAYER.planner.metrics)
GROUP_BYS = ["metric_time__day", "metric_time__week", "metric_time__month", "user__segment",
             "user"]
WHERES = ["{{ Dimension('user__segment') }} = 'a'",
          "{{ TimeDimension('metric_time', 'day') }} >= '2026-02-09'",
          "{{ Dimension('user__segment') }} is not null"]

USERS = st.sampled_from(["u1", "u2", "u3", "u4", None])
# half days over 50 days, and often whole weeks: many events are exactly 7 days (the
# conversion window) apart
WEEKLY = st.integers(0, 6).map(lambda n: START + dt.timedelta(days=3 + 7 * n))
TIMES = st.one_of(
    st.none(), st.integers(0, 99).map(lambda n: START + dt.timedelta(hours=12 * n)), WEEKLY)
money = st.one_of(st.none(), st.integers(0, 400).map(lambda n: n / 4))
CATEGORIES = st.sampled_from(["x", "y", None])


@st.composite
def tables(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    dense = draw(st.booleans())  # few users and categories: many conversions and ties
    users = st.sampled_from(["u1", "u2"]) if dense else USERS
    categories = st.just("x") if dense else CATEGORIES
    times = WEEKLY if dense else TIMES
    orders = [{"order_id": f"o{i}", "user_key": draw(users), "ordered_at": draw(times),
               "revenue": draw(money), "currency": draw(st.sampled_from(["EUR", "USD", None])),
               "is_gift": draw(st.sampled_from([True, False, None]))}
              for i in range(draw(st.integers(0, 8)))]
    people = [{"user_key": u, "segment": draw(st.sampled_from(["a", "b", None]))}
              for u in ("u1", "u2", "u3", "u4") if draw(st.booleans())]
    views = [{"view_id": f"v{i}", "user_key": draw(users), "viewed_at": draw(times),
              "category": draw(categories)} for i in range(draw(st.integers(0, 8)))]
    lines = [{"line_id": f"l{i}", "order_id": f"o{draw(st.integers(0, 8))}",
              "user_key": draw(users), "purchased_at": draw(times),
              "category": draw(categories), "price": draw(money)}
             for i in range(draw(st.integers(0, 8)))]
    return {"p_orders": orders, "p_users": people, "p_views": views, "p_lines": lines}


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[str], list[str], list[str], Any, Any]:
    metrics = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=3, unique=True))
    group_by = draw(st.lists(st.sampled_from(GROUP_BYS), max_size=2, unique=True))
    where = draw(st.lists(st.sampled_from(WHERES), max_size=1))
    start = draw(st.one_of(st.none(), st.integers(0, 49).map(
        lambda n: START + dt.timedelta(days=n))))
    end = draw(st.one_of(st.none(), st.integers(0, 49).map(
        lambda n: START + dt.timedelta(days=n))))
    assume(start is None or end is None or start <= end)
    return metrics, group_by, where, start, end


def load(con: duckdb.DuckDBPyConnection, data: dict[str, list[dict[str, Any]]]) -> None:
    for name, columns in TABLES.items():
        con.execute(f"create or replace table {name} ("
                    + ", ".join(f"{c} {t}" for c, t in columns.items()) + ")")
        if data[name]:  # one statement, a list per column (executemany runs one per row)
            con.execute(f"insert into {name} select "
                        + ", ".join(f"unnest(?::{t}[])" for t in columns.values()),
                        [[row[c] for row in data[name]] for c in columns])


def compare(con: duckdb.DuckDBPyConnection, data: dict[str, list[dict[str, Any]]],
            metrics: list[str], group_by: list[str], where: list[str], start: Any,
            end: Any) -> None:
    request = QueryRequest(metrics, list(group_by), list(where), [], None, start, end)
    reference = Reference(LAYER.manifest, data)
    try:
        sql = LAYER.compile(request, "duckdb", lambda m: f'"{m}"').sql
    except UsageError as exc:
        with pytest.raises(RefError):
            reference.query(metrics, group_by, where, start, end)
        assert "metric_time" in str(exc)
        return
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description]
    got = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    want = reference.query(metrics, group_by, where, start, end)
    key = [*group_by]
    got.sort(key=lambda r: sort_key(tuple(r[k] for k in key)))
    message = f"{metrics} by {group_by} where {where} [{start}, {end}]\n{sql}"
    assert [tuple(r[k] for k in key) for r in got] == [tuple(r[k] for k in key) for r in want], \
        f"{message}\ngot  {got}\nwant {want}"
    for row, expected in zip(got, want, strict=True):
        for metric in metrics:
            assert same(row[metric], expected[metric]), \
                f"{metric}: {row[metric]!r} != {expected[metric]!r} at {row}\n{message}"


@pytest.fixture(scope="module")
def con() -> Any:
    connection = duckdb.connect()
    yield connection
    connection.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(data=tables(), request=requests())
def test_arpu_query_equals_the_reference(con: duckdb.DuckDBPyConnection,
                                          data: dict[str, list[dict[str, Any]]],
                                          request: tuple[list[str], list[str], list[str], Any,
                                                         Any]) -> None:
    load(con, data)
    compare(con, data, *request)


CASES = [  # each metric type alone, by the grains and slices that exercise it
    (["revenue_wow", "revenue_3_days_ago"], ["metric_time__day"]),
    (["revenue_last_month", "revenue_at_month_start"], ["metric_time__month"]),
    (["revenue_at_month_start", "revenue_last_month"], ["metric_time__week"]),
    (["aov_last_week", "revenue_3_days_ago"], ["metric_time__week", "user__segment"]),
    (["revenue_7d", "revenue_mtd", "revenue_to_date"], ["metric_time__day", "user"]),
    (["revenue_7d_last", "buyers_14d_avg", "revenue_7d"], ["metric_time__month"]),
    (["view_to_buy", "view_to_buy_open", "view_to_buy_ever"], ["metric_time__week", "user"]),
    (["view_to_buy", "view_to_buy_ever"], []),
    (["orders_filled", "eur_orders", "eur_share"], ["metric_time__day"]),
    (["revenue_median", "revenue_p75", "revenue_p75_disc", "gifts"], ["user__segment"]),
    (["line_price"], ["order__user__segment", "metric_time__week"]),  # two joins away
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(data=tables())
@pytest.mark.parametrize("metrics,group_by", CASES, ids=["-".join(c[0]) for c in CASES])
def test_each_metric_type(con: duckdb.DuckDBPyConnection, metrics: list[str],
                          group_by: list[str], data: dict[str, list[dict[str, Any]]]) -> None:
    load(con, data)
    compare(con, data, metrics, group_by, [], None, None)


def test_a_conversion_exactly_at_the_window_end(con: duckdb.DuckDBPyConnection) -> None:
    """A purchase exactly 7 days after the view: converted with arpu_window_end inclusive
    (SPEC's funnel), not with MetricFlow's own half-open window."""
    view = START + dt.timedelta(days=1)
    data = {"p_orders": [], "p_users": [],
            "p_views": [{"view_id": "v1", "user_key": "u1", "viewed_at": view, "category": "x"}],
            "p_lines": [{"line_id": "l1", "order_id": "o1", "user_key": "u1",
                         "purchased_at": view + dt.timedelta(days=7), "category": "x",
                         "price": 3.0}]}
    load(con, data)
    sql = LAYER.compile(QueryRequest(["view_to_buy", "view_to_buy_open"]), "duckdb",
                        lambda m: f'"{m}"').sql
    assert con.execute(sql).fetchall() == [(1.0, 0)]
    compare(con, data, ["view_to_buy", "view_to_buy_open"], [], [], None, None)


def test_natural_entity_joins_the_row_valid_at_the_time(con: duckdb.DuckDBPyConnection) -> None:
    """A slowly changing dimension: a payment reads the plan valid when it was made."""
    layer = SemanticLayer(FIXTURES, ["s_payments", "s_user_plans", "s_balances"],
                          FIXTURES / "metrics_snapshots")
    con.execute("create or replace table s_payments as select * from (values "
                "('p1', 'u1', timestamp '2026-01-05', 10.0), "
                "('p2', 'u1', timestamp '2026-02-05', 20.0), "
                "('p3', 'u2', timestamp '2026-02-06', 5.0)) t(payment_id, user_key, paid_at, "
                "amount)")
    con.execute("create or replace table s_user_plans as select * from (values "
                "('u1', 'free', timestamp '2026-01-01', timestamp '2026-02-01'), "
                "('u1', 'pro', timestamp '2026-02-01', null::timestamp)) "
                "t(user_key, plan, valid_from, valid_to)")
    sql = layer.compile(QueryRequest(["amount"], ["user__plan"]), "duckdb",
                        lambda m: f'"{m}"').sql
    assert con.execute(sql).fetchall() == [("free", 10.0), ("pro", 20.0), (None, 5.0)]


def test_non_additive_dimension_takes_the_last_day(con: duckdb.DuckDBPyConnection) -> None:
    """A balance is not summed over days: the last day per user (window_groupings), or the
    first day overall, per queried period."""
    layer = SemanticLayer(FIXTURES, ["s_payments", "s_user_plans", "s_balances"],
                          FIXTURES / "metrics_snapshots")
    con.execute("create or replace table s_balances as select * from (values "
                "('u1', timestamp '2026-01-05', 100.0), ('u1', timestamp '2026-01-20', 150.0), "
                "('u2', timestamp '2026-01-07', 40.0), ('u2', timestamp '2026-02-03', 70.0), "
                "('u1', timestamp '2026-02-02', 90.0)) t(user_key, day, balance)")

    def ask(metric: str, group_by: list[str]) -> list[tuple[Any, ...]]:
        sql = layer.compile(QueryRequest([metric], group_by), "duckdb", lambda m: f'"{m}"').sql
        return con.execute(sql).fetchall()

    assert ask("closing_balance", []) == [(160.0,)]  # u1 on 02-02, u2 on 02-03
    assert ask("closing_balance", ["metric_time__month"]) == [
        (dt.datetime(2026, 1, 1), 190.0), (dt.datetime(2026, 2, 1), 160.0)]
    assert ask("opening_balance_total", ["metric_time__month"]) == [
        (dt.datetime(2026, 1, 1), 100.0), (dt.datetime(2026, 2, 1), 90.0)]
