"""Compiled SQL per dialect: golden files for the compile-only targets, and one test per gap
between engines that sqlglot does not bridge by itself (each handled by a macro or refused)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from runner.context import Context
from runner.errors import CompileError

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from regen import DIALECTS, compile_all  # noqa: E402


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    out = tmp_path_factory.mktemp("compiled")
    return {d: compile_all(d, out) for d in (*DIALECTS, "duckdb", "postgres", "spark")}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_golden_sql_matches_by_parsed_tree(compiled: dict[str, dict[str, str]],
                                           dialect: str) -> None:
    """Regenerate with `python tests/golden/regen.py` when a change is intended."""
    goldens = {p.stem: p.read_text() for p in sorted((GOLDEN / dialect).glob("*.sql"))}
    assert set(goldens) == set(compiled[dialect]), "models added or removed: regenerate"
    for name, sql in compiled[dialect].items():
        expected = sqlglot.parse_one(goldens[name], read=dialect)
        actual = sqlglot.parse_one(sql, read=dialect)
        assert actual == expected, f"{dialect}/{name}.sql differs: regenerate and review"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_golden_file_reparses_in_its_dialect(dialect: str) -> None:
    files = sorted((GOLDEN / dialect).glob("*.sql"))
    assert len(files) == len(list((GOLDEN.parents[1] / "models").rglob("*.sql")))
    for path in files:
        tree = sqlglot.parse_one(path.read_text(), read=dialect)
        assert isinstance(tree, sqlglot.exp.Query), path


def test_json_arrays_unnest_from_one_on_every_engine(compiled: dict[str, dict[str, str]]) -> None:
    """Product lines are numbered from 1: PostgreSQL's WITH ORDINALITY is 1-based; Spark's
    POSEXPLODE, BigQuery's OFFSET and Snowflake's FLATTEN index are 0-based, so + 1;
    ClickHouse numbers the elements with arrayEnumerate (1-based)."""
    sql = {d: " ".join(c["fct_product_purchases"].split()).upper() for d, c in compiled.items()}
    assert "JSON_ARRAY_ELEMENTS(" in sql["postgres"] and "WITH ORDINALITY" in sql["postgres"]
    assert "POSEXPLODE(" in sql["spark"] and "E.POSITION + 1 AS POSITION" in sql["spark"]
    assert "WITH OFFSET" in sql["bigquery"] and "POSITION + 1" in sql["bigquery"]
    assert "FLATTEN(" in sql["snowflake"] and "POSITION + 1" in sql["snowflake"]
    assert "WITH ORDINALITY" in sql["trino"] and "POSITION + 1" not in sql["trino"]
    assert "JSON_EXTRACT_ARRAY_ELEMENT_TEXT(" in sql["redshift"]
    # ClickHouse's arrays count from 1: a row per position of the array's JSON elements
    assert "ARRAYJOIN(ARRAYENUMERATE(JSONEXTRACTARRAYRAW(" in sql["clickhouse"]


def test_weeks_start_on_monday_everywhere(compiled: dict[str, dict[str, str]]) -> None:
    """BigQuery's WEEK starts on Sunday: the period macro asks it for ISOWEEK."""
    bigquery = compiled["bigquery"]["derived_user_periods"].upper()
    assert "ISOWEEK" in bigquery and ", WEEK)" not in bigquery
    for dialect in ("postgres", "spark", "snowflake", "trino", "redshift", "duckdb", "clickhouse"):
        assert "'WEEK'" in compiled[dialect]["derived_user_periods"].upper(), dialect


def test_round_of_a_double_is_cast_for_postgres() -> None:
    """PostgreSQL has round(numeric, int) but no round(double precision, int)."""
    sql = sqlglot.transpile("select round(avg(price), 2) from t", read="duckdb",
                            write="postgres")[0]
    assert sql == "SELECT ROUND(CAST(AVG(price) AS DECIMAL), 2) FROM t"


def test_elapsed_microseconds_not_boundaries() -> None:
    """Time to convert is elapsed time: Spark's and Trino's day-level date_diff count elapsed
    days, DuckDB's counts boundaries; at microsecond grain both are elapsed time."""
    spark = sqlglot.transpile("select date_diff('microsecond', a, b) from t", read="duckdb",
                              write="spark")[0]
    assert spark == "SELECT DATEDIFF(MICROSECOND, a, b) FROM t"


@pytest.mark.parametrize("body, message", [
    ("select category, count(*) as n from {{ ref('fct_product_views') }} group by all",
     "GROUP BY ALL is not portable"),
    ("select count(*) filter (where price > 0) over (partition by category) as n "
     "from {{ ref('fct_product_views') }}", "FILTER in a window function is not portable"),
    ("select sum(price) over (order by viewed_at range between interval 1 day preceding "
     "and current row) as s from {{ ref('fct_product_views') }}", "RANGE frames are not portable"),
])
def test_unportable_sql_is_refused_with_the_model(tmp_path: Path, body: str,
                                                  message: str) -> None:
    root = Path(__file__).resolve().parents[1]
    project = tmp_path / "p"
    for folder in ("models", "macros"):
        shutil.copytree(root / folder, project / folder)
    shutil.copy(root / "arpu.yml", project / "arpu.yml")
    (project / "models" / "marts" / "bad_model.sql").write_text(body + "\n")
    with pytest.raises(CompileError, match=message) as info:
        Context(project).compile("postgres", select=["bad_model"])
    assert "bad_model.sql" in str(info.value)


def test_models_and_macros_never_ask_which_engine_they_run_on() -> None:
    """A macro that differs per engine is a family (`default__x`, `<dialect>__x`) called as
    `x(...)`; no template branches on the target's dialect."""
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "models").rglob("*")) + sorted((root / "macros").rglob("*")):
        if path.is_file():
            assert "target.dialect" not in path.read_text(), path


def _dispatch_env(macros: Path, dialect: str) -> Any:
    from runner.compile import TargetInfo, macro_environment

    return macro_environment(macros, target=TargetInfo("t", dialect, None))


def test_a_dispatched_macro_picks_the_dialects_own_else_the_default(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(
        "{% macro default__shout(x) %}{{ x }}!{% endmacro %}\n"
        "{% macro postgres__shout(x) %}{{ x | upper }}!{% endmacro %}\n"
        "{% macro twice(x) %}{{ shout(x) }}{{ shout(x) }}{% endmacro %}\n")
    (tmp_path / "b.sql").write_text(  # another file of the family, called across files
        "{% macro spark__shout(x) %}<{{ default__shout(x) }}>{% endmacro %}\n")
    template = "{{ shout('a') }} {{ twice(x='b') }}"
    assert _dispatch_env(tmp_path, "duckdb").from_string(template).render() == "a! b!b!"
    assert _dispatch_env(tmp_path, "postgres").from_string(template).render() == "A! B!B!"
    assert _dispatch_env(tmp_path, "spark").from_string(template).render() == "<a!> <b!><b!>"


def test_a_macro_both_defined_and_dispatched_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("{% macro default__shout(x) %}{{ x }}{% endmacro %}\n")
    (tmp_path / "b.sql").write_text("{% macro shout(x) %}{{ x }}{% endmacro %}\n")
    with pytest.raises(CompileError, match="'shout' is defined and also dispatched") as info:
        _dispatch_env(tmp_path, "duckdb")
    assert "b.sql" in str(info.value)


def test_clickhouse_gets_exact_medians_and_null_variances(
        compiled: dict[str, dict[str, str]]) -> None:
    """ClickHouse's median() is an estimate from a sample of 8,192 values and its varSamp of
    one value is nan: the macros ask for the exact median and a null variance."""
    clickhouse = compiled["clickhouse"]
    assert "quantileExactInclusive(" in clickhouse["category_funnel"]
    assert "median(" not in clickhouse["category_opportunities"].lower()
    assert "CASE WHEN COUNT(o.revenue) > 1 THEN varSamp(o.revenue) END" in (
        clickhouse["experiment_results"])
    assert "MEDIAN(" in compiled["snowflake"]["category_funnel"].upper()
