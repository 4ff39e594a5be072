"""`arpu query` on the bundled sample: the recipe's metrics equal the relations the models build
(arpu_timeseries row for row, category_funnel's conversion per category), and the SQL compiles
for every dialect without a connection."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from support.built import Built, sample_with_metrics
from support.compare import same
from support.project import ProjectHarness, run_arpu

from runner.metrics.plan import QueryRequest
from runner.metrics.query import compile_query, run_query

pytestmark = [pytest.mark.slow]
DIALECTS = ("duckdb", "postgres", "spark", "snowflake", "bigquery", "redshift", "trino",
            "clickhouse")


@pytest.fixture(scope="module")
def sample(sample_built_with_metrics: Built, tmp_path_factory: pytest.TempPathFactory
           ) -> ProjectHarness:
    result = sample_built_with_metrics.outcome
    assert result.success, [r.error for r in result.results if r.error]
    return sample_built_with_metrics.copy(tmp_path_factory.mktemp("metrics") / "project")


def query(project: ProjectHarness, metrics: list[str], group_by: list[str] | None = None,
          **kwargs: Any) -> list[dict[str, Any]]:
    with project.context() as ctx:
        shown = run_query(ctx, QueryRequest(metrics, list(group_by or []), **kwargs)).shown
    return [dict(zip(shown.columns, row, strict=True)) for row in shown.rows]


def day(value: Any) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


@pytest.mark.parametrize("grain", ["day", "week", "month"])
def test_arpu_equals_arpu_timeseries(sample: ProjectHarness, grain: str) -> None:
    expected = [r for r in sample.rows("arpu_timeseries", "period_start")
                if r["grain"] == grain and r["segment"] == "all"]
    rows = query(sample, ["arpu", "arppu", "revenue", "active_users", "buyers"],
                 [f"metric_time__{grain}"])
    assert len(rows) == len(expected) > 0
    for got, want in zip(rows, expected, strict=True):
        assert day(got[f"metric_time__{grain}"]) == want["period_start"]
        assert got["active_users"] == want["active_users"]
        assert got["buyers"] == want["purchasers"]
        for metric in ("arpu", "arppu", "revenue"):
            assert same(got[metric], want[metric]), (metric, got, want)


def test_arpu_by_segment_equals_arpu_timeseries(sample: ProjectHarness) -> None:
    """Grouping by user__segment is arpu_timeseries' cohort / non_cohort segments."""
    expected = sorted(((r["period_start"], r["segment"]), r) for r in
                      sample.rows("arpu_timeseries") if r["grain"] == "week"
                      and r["segment"] != "all")
    rows = query(sample, ["arpu", "active_users"], ["metric_time__week", "user__segment"])
    assert [(day(r["metric_time__week"]), r["user__segment"]) for r in rows] == \
        [key for key, _ in expected]
    for got, (_, want) in zip(rows, expected, strict=True):
        assert got["active_users"] == want["active_users"]
        assert same(got["arpu"], want["arpu"])


def test_where_filter_is_the_segment(sample: ProjectHarness) -> None:
    cohort = query(sample, ["arpu"], ["metric_time__month"],
                   where=["{{ Dimension('user__segment') }} = 'cohort'"])
    expected = [r for r in sample.rows("arpu_timeseries", "period_start")
                if r["grain"] == "month" and r["segment"] == "cohort"]
    assert [same(r["arpu"], e["arpu"]) for r, e in zip(cohort, expected, strict=True)] == \
        [True] * len(expected)
    # a metric's own filter does the same
    filtered = query(sample, ["cohort_revenue"], ["metric_time__month"])
    assert [same(r["cohort_revenue"], e["revenue"]) for r, e in
            zip(filtered, expected, strict=True)] == [True] * len(expected)


def test_view_to_purchase_rate_equals_category_funnel(sample: ProjectHarness) -> None:
    funnel = sample.rows("category_funnel", "category")
    rows = query(sample, ["view_to_purchase_rate", "view_to_purchase_conversions"],
                 ["funnel_entry__category"])
    assert [r["funnel_entry__category"] for r in rows] == [f["category"] for f in funnel]
    for got, want in zip(rows, funnel, strict=True):
        assert got["view_to_purchase_conversions"] == want["purchasers"]
        assert same(got["view_to_purchase_rate"], want["conversion_rate"])


def test_re_entry_conversion_equals_the_re_entry_funnel(tmp_path: Path) -> None:
    """MetricFlow's own conversion semantics (any earlier view within the window) over every
    view are the funnel with var funnel_reentry."""
    result = sample_with_metrics(tmp_path / "project", funnel_reentry=True)
    assert result.success, [r.error for r in result.results if r.error]
    project = ProjectHarness.existing(tmp_path / "project")
    funnel = project.rows("category_funnel", "category")
    rows = query(project, ["view_to_purchase_rate_any_view"], ["product_view__category"])
    assert [r["product_view__category"] for r in rows] == [f["category"] for f in funnel]
    for got, want in zip(rows, funnel, strict=True):
        assert same(got["view_to_purchase_rate_any_view"], want["conversion_rate"])


def test_totals_without_group_by(sample: ProjectHarness) -> None:
    orders = sample.rows("fct_orders")
    [row] = query(sample, ["revenue", "orders", "aov", "buyers"])
    assert row["orders"] == len(orders)
    assert row["buyers"] == len({o["user_key"] for o in orders})
    assert same(row["revenue"], sum(o["revenue"] for o in orders))
    assert same(row["aov"], row["revenue"] / row["orders"])


def test_cumulative_offset_and_time_range(sample: ProjectHarness) -> None:
    daily = {day(r["metric_time__day"]): r["revenue"] for r in
             query(sample, ["revenue"], ["metric_time__day"])}
    rows = query(sample, ["revenue_7d", "revenue_mtd"], ["metric_time__day"],
                 start_time=dt.datetime(2026, 2, 3), end_time=dt.datetime(2026, 2, 10))
    assert [day(r["metric_time__day"]) for r in rows] == \
        [dt.date(2026, 2, 3) + dt.timedelta(days=i) for i in range(8)]
    for row in rows:
        today = day(row["metric_time__day"])
        week = sum(v for d, v in daily.items() if today - dt.timedelta(days=7) < d <= today)
        month = sum(v for d, v in daily.items() if d.replace(day=1) == today.replace(day=1)
                    and d <= today)
        assert same(row["revenue_7d"], week) and same(row["revenue_mtd"], month)
    weekly = {day(r["metric_time__week"]): r["revenue"] for r in
              query(sample, ["revenue"], ["metric_time__week"])}
    growth = query(sample, ["revenue_wow_growth"], ["metric_time__week"])
    for row in growth:
        week = day(row["metric_time__week"])
        before = weekly.get(week - dt.timedelta(days=7))
        if before is None:
            assert row["revenue_wow_growth"] is None
        else:
            assert same(row["revenue_wow_growth"], (weekly[week] - before) / before)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_explain_for_every_dialect(sample: ProjectHarness, dialect: str) -> None:
    request = QueryRequest(["arpu", "revenue_7d", "view_to_purchase_rate", "revenue_wow_growth"],
                           ["metric_time__week"],
                           ["{{ Dimension('user__segment') }} = 'cohort'"])
    with sample.context() as ctx:
        sql = compile_query(ctx, request, dialect).sql
    assert sqlglot.parse_one(sql, read=dialect) is not None
    if dialect == "bigquery":
        assert "ISOWEEK" in sql  # BigQuery's WEEK starts on Sunday
    assert "arpu_timeseries" not in sql  # computed from the facts, not read from the answer


def test_reads_only_what_it_needs(sample: ProjectHarness) -> None:
    with sample.context() as ctx:
        sql = compile_query(ctx, QueryRequest(["revenue"], ["metric_time__week"])).sql
    tables = {t.name for t in sqlglot.parse_one(sql).find_all(sqlglot.exp.Table)
              if not t.name.startswith("arpu_")}  # its own CTEs
    assert tables == {"fct_orders"}


def test_cli(sample: ProjectHarness) -> None:
    out = run_arpu(sample.root, "query", "--metrics", "arpu,revenue", "--group-by",
                   "metric_time__month", "--order-by", "-arpu", "--limit", "2", "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["metric_time__month", "arpu", "revenue"]
    assert len(rows) == 2 and float(rows[0]["arpu"]) >= float(rows[1]["arpu"])
    out = run_arpu(sample.root, "query", "-m", "buyers", "-g", "user__segment", "-f", "json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["user__segment"] for r in records} == {"cohort", "non_cohort"}
    out = run_arpu(sample.root, "query", "-m", "arpu", "-g", "metric_time__week", "--explain",
                   "--dialect", "snowflake")
    assert out.returncode == 0 and "DATE_TRUNC('WEEK'" in out.stdout
    out = run_arpu(sample.root, "query", "-m", "arpu", "-g", "order__currency")
    assert out.returncode == 2
    assert out.stderr.startswith("Error: --group-by: 'order__currency': 'order' is not an "
                                 "entity of semantic model 'events'")


def test_ls_metrics_and_dimensions(sample: ProjectHarness) -> None:
    out = run_arpu(sample.root, "ls", "--metrics")
    assert out.returncode == 0, out.stderr
    assert "view_to_purchase_rate" in out.stdout and "conversion" in out.stdout
    out = run_arpu(sample.root, "ls", "--dimensions", "--metrics", "arpu")
    assert out.returncode == 0, out.stderr
    for name in ("metric_time", "user__segment", "user__is_identified", "user"):
        assert name in out.stdout
    assert "order__currency" not in out.stdout  # not reachable from active_users' events


def test_saved_query_exports_are_published(sample: ProjectHarness) -> None:
    """`arpu build` builds each saved query's exports after the models and publishes them with
    the models: a BI tool reads weekly_arpu like any relation."""
    exported = sample.rows("weekly_arpu", "metric_time__week")
    asked = query(sample, ["revenue", "active_users", "buyers", "arpu", "arppu"],
                  ["metric_time__week"])
    assert len(exported) == len(asked) == 13
    for got, want in zip(exported, asked, strict=True):
        assert got["metric_time__week"] == want["metric_time__week"]
        assert got["active_users"] == want["active_users"]
        assert same(got["arpu"], want["arpu"])
    conversion = {r["funnel_entry__category"]: r for r in sample.rows("category_conversion")}
    funnel = sample.rows("category_funnel", "category")
    assert set(conversion) == {f["category"] for f in funnel}
    for row in funnel:
        assert same(conversion[row["category"]]["view_to_purchase_rate"],
                     row["conversion_rate"])
    results = json.loads((sample.root / "target" / "run_results.json").read_text())["results"]
    exports = {r["model"]: r for r in results if r["model"] in ("weekly_arpu",
                                                                 "category_conversion")}
    assert exports["weekly_arpu"]["status"] == "success"
    assert exports["weekly_arpu"]["rows"] == 13
    assert exports["category_conversion"]["materialized"] == "view"
    assert (sample.root / exports["weekly_arpu"]["compiled_path"]).exists()


def test_semantic_manifest_json(sample: ProjectHarness) -> None:
    manifest = json.loads((sample.root / "target" / "semantic_manifest.json").read_text())
    assert set(manifest) >= {"semantic_models", "metrics", "saved_queries",
                             "project_configuration"}
    models = {m["name"]: m for m in manifest["semantic_models"]}
    assert models["orders"]["node_relation"]["alias"] == "fct_orders"
    assert {e["name"]: e["type"] for e in models["orders"]["entities"]} == {
        "order": "primary", "user": "foreign"}
    metrics = {m["name"]: m for m in manifest["metrics"]}
    conversion = metrics["view_to_purchase_rate"]["type_params"]["conversion_type_params"]
    assert conversion["window"] == {"count": 7, "granularity": "day"}
    assert conversion["constant_properties"] == [{"base_property": "category",
                                                  "conversion_property": "category"}]
    assert [m["name"] for m in metrics["arpu"]["type_params"]["input_measures"]] == \
        ["order_revenue", "users_with_messages"]
    saved = {q["name"]: q for q in manifest["saved_queries"]}
    assert saved["weekly_arpu"]["exports"][0]["config"]["export_as"] == "table"
