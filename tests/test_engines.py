"""The same models give the same numbers on DuckDB, PostgreSQL, Spark (local mode) and ClickHouse
(embedded, chdb)."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pytest
from support.compare import assert_same_across_engines, loaded_content
from support.engines import ENGINES, fixtures_on, sample_on
from support.project import FIXTURES, ProjectHarness, use_isolated_targets

from runner.context import Context

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_postgres_schemas")]
EACH_ENGINE = [pytest.param(engine, marks=getattr(pytest.mark, engine)) for engine in ENGINES]


@pytest.mark.parametrize("engine", EACH_ENGINE)
def test_sample_is_the_same_as_on_duckdb(engine: str, tmp_path_factory: pytest.TempPathFactory
                                         ) -> None:
    """The bundled sample (with the recipe's metrics/) built on `engine` and on DuckDB: every
    SPEC relation the same (support/engines.py builds each engine once per session)."""
    duck = sample_on(tmp_path_factory, "duckdb").relations
    assert len(duck["stg_events"]) > 90_000 and duck["rejected_events"]
    assert_same_across_engines(duck, sample_on(tmp_path_factory, engine).relations, engine)


@pytest.mark.parametrize("engine", EACH_ENGINE)
def test_hand_fixtures_are_the_same_as_on_duckdb(engine: str,
                                                 tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    """The edge cases (window edges, sub-second conversions, re-entry, promo cut-off, two
    variants) ingested and built on `engine` and on DuckDB, with non-default vars."""
    duck = fixtures_on(tmp_path_factory, "duckdb").relations
    assert duck["category_funnel"] and duck["experiment_results"] and duck["rejected_events"]
    assert_same_across_engines(duck, fixtures_on(tmp_path_factory, engine).relations, engine)


@pytest.mark.spark
def test_spark_session_has_the_targets_java_options_and_concurrency(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """arpu.yml's `conf`: its spark.driver.extraJavaOptions is added to arpu's own (the log
    settings stay); `concurrency` is how many models the engine builds at once. And rows read
    through Arrow are the Python values a collect() gives; the time spine is every day."""
    from runner.config import SparkTarget
    from runner.engines.spark import SparkEngine

    sample_on(tmp_path_factory, "spark")  # started this process's session from arpu.yml
    project = tmp_path_factory.mktemp("spark_conf")
    engine = SparkEngine(project, SparkTarget(database="arpu_conf_check", concurrency=3))
    java = engine.spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    assert "-Dlog4j2.configurationFile=file:" in java, java
    assert java.endswith(" -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m "
                         "-XX:+UseSerialGC"), java
    assert engine.concurrency == 3
    # rows come through Arrow, as Python values; a time is naive UTC (the session's zone)
    columns, rows = engine.fetch(
        "select timestamp'2026-01-05 00:10:48.351' as t, date'2026-01-05' as d, "
        "cast(12.5 as decimal(10, 2)) as m, 3 as i, 0.5d as f, true as b, 'x' as s, "
        "cast(null as string) as n union all select null, null, null, null, null, null, "
        "null, null")
    assert columns == ["t", "d", "m", "i", "f", "b", "s", "n"]
    assert rows == [(dt.datetime(2026, 1, 5, 0, 10, 48, 351000), dt.date(2026, 1, 5),
                     decimal.Decimal("12.50"), 3, 0.5, True, "x", None), (None,) * 8]
    # the metrics' time spine: an exploded sequence of days, empty as the digits' would be
    from runner.engines.spark import SQL

    spine = SQL.day_spine("bounds")
    assert spine is not None
    for lo, hi, days in (("'2026-02-27 00:00:00'", "'2026-03-02 00:00:00'", 4),
                         ("'2026-03-02 00:00:00'", "'2026-02-27 00:00:00'", 0),
                         ("null", "null", 0)):
        _, got = engine.fetch(f"with bounds as (select cast({lo} as timestamp) as lo, "
                              f"cast({hi} as timestamp) as hi) select count(*), min(`day`), "
                              f"max(`day`) from ({spine.sql('spark')}) as spine")
        first = dt.datetime(2026, 2, 27) if days else None
        last = dt.datetime(2026, 3, 2) if days else None
        assert got == [(days, first, last)], (lo, hi)


@pytest.mark.postgres
def test_postgres_time_spine_is_every_day_from_lo_to_hi() -> None:
    """The metrics' time spine on PostgreSQL, generate_series: every day from `lo` to `hi`,
    none when they are null or `lo` is after `hi` (as the portable digits give)."""
    import psycopg
    from support.project import POSTGRES_DSN

    from runner.engines.postgres import SQL

    spine = SQL.day_spine("bounds")
    assert spine is not None
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as pg:
        pg.execute("set timezone = 'America/New_York'")  # a DST change on 2026-03-08
        for lo, hi, days in (("'2026-03-06 00:00:00'", "'2026-03-10 00:00:00'", 5),
                             ("'2026-03-02 00:00:00'", "'2026-02-27 00:00:00'", 0),
                             ("null", "null", 0)):
            got = pg.execute(f"with bounds as (select cast({lo} as timestamp) as lo, "
                             f"cast({hi} as timestamp) as hi) select count(*), min(day), "
                             f"max(day) from ({spine.sql('postgres')}) as spine").fetchall()
            first = dt.datetime(2026, 3, 6) if days else None
            last = dt.datetime(2026, 3, 10) if days else None
            assert got == [(days, first, last)], (lo, hi)


def test_a_spark_error_is_the_jvms_own_line() -> None:
    """py4j's first line names only the call ("o47.sql"); the JVM's error is the next."""
    from runner.engines.spark import _first_line

    py4j = Exception("An error occurred while calling o47.sql.\n: java.lang.StackOverflowError"
                     "\n\tat scala.collection.immutable.List.map(List.scala:293)")
    assert _first_line(py4j) == "java.lang.StackOverflowError"
    spark = Exception("[TABLE_OR_VIEW_NOT_FOUND] The table `x` cannot be found.\nSQLSTATE: 42P01")
    assert _first_line(spark) == "[TABLE_OR_VIEW_NOT_FOUND] The table `x` cannot be found."


@pytest.mark.postgres
def test_incremental_builds_on_postgres_match_one_duckdb_build(tmp_path: Path) -> None:
    """Two loads with a build after each on PostgreSQL (merges in transactions) give the
    relations of one DuckDB build of both loads."""
    files = sorted(FIXTURES.glob("*.ndjson"))
    half = len(files) // 2
    whole = ProjectHarness(tmp_path / "whole")
    with Context(whole.root) as ctx:
        ctx.ingest(files)
        assert ctx.build().success
    split = ProjectHarness(tmp_path / "split")
    use_isolated_targets(split, "split")
    for part in (files[:half], files[half:]):
        with Context(split.root, target="postgres") as ctx:
            ctx.ingest(part)
            result = ctx.build()
        assert result.success, [(r.model, r.error) for r in result.results if r.error]
    with Context(split.root, target="postgres") as ctx:
        assert ctx.engine().watermarks()["stg_events"] == len(files)  # one load per file
    # which load and line a message came from differs by construction
    expected = loaded_content(whole, "duckdb")
    actual = loaded_content(split, "postgres")
    assert_same_across_engines(expected, actual, "postgres incremental")
