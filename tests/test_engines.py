"""The same models give the same numbers on DuckDB, PostgreSQL, Spark (local mode) and ClickHouse
(embedded, chdb)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from support.compare import assert_same_across_engines, relations, without_provenance
from support.project import FIXTURES, ProjectHarness, use_isolated_targets

from runner.context import Context

pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _drop_postgres_schemas() -> Any:
    """Leave the shared `test` database as it was: this process's schemas (use_isolated_targets
    names them after the pid; tests run in parallel processes)."""
    yield
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as pg:
        schemas = pg.execute("select nspname from pg_namespace where nspname ~ %s",
                             [rf"^arpu_test_.*_{os.getpid()}(__work|__next)?$"]).fetchall()
        for (schema,) in schemas:
            pg.execute(f'drop schema "{schema}" cascade')


def build_on(project: ProjectHarness, targets: tuple[str, ...], **vars: Any) -> None:
    for target in targets:
        with Context(project.root, target=target, vars=vars or None) as ctx:
            result = ctx.build()
        assert result.success, (target, [(r.model, r.error) for r in result.results if r.error])


ENGINES = ("postgres", "spark", "clickhouse")  # each compared with DuckDB


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.clickhouse
def test_sample_is_the_same_on_duckdb_postgres_spark_and_clickhouse(tmp_path: Path) -> None:
    """Built here on every engine, DuckDB too: rejected lines name the file they were loaded
    from, so the sample must be loaded from the same path everywhere."""
    project = ProjectHarness(tmp_path / "project", with_sample=True)
    use_isolated_targets(project, "sample")
    build_on(project, ("duckdb", *ENGINES))
    duck = relations(project, "duckdb")
    assert len(duck["stg_events"]) > 90_000
    for engine in ENGINES:
        assert_same_across_engines(duck, relations(project, engine), engine)


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.clickhouse
def test_hand_fixtures_are_the_same_on_every_engine(tmp_path: Path) -> None:
    """The edge cases (window edges, sub-second conversions, re-entry, promo cut-off, two
    variants) on all engines at once, with non-default vars."""
    project = ProjectHarness(tmp_path / "project")
    use_isolated_targets(project, "fixtures")
    files = sorted(FIXTURES.glob("*.ndjson")) + sorted(FIXTURES.glob("*.json"))
    for target in ("duckdb", *ENGINES):
        with Context(project.root, target=target) as ctx:
            result = ctx.ingest(files)
        assert result.lines_read == result.loaded + result.rejected
    build_on(project, ("duckdb", *ENGINES), funnel_reentry=True,
             conversion_window_days=3, promo_start="2026-03-09")
    duck = relations(project, "duckdb")
    assert duck["category_funnel"] and duck["experiment_results"]
    for engine in ENGINES:
        assert_same_across_engines(duck, relations(project, engine), engine)


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
        assert ctx.engine().watermark("stg_events") == len(files)  # one load per file
    # which load and line a message came from differs by construction
    expected = without_provenance(relations(whole, "duckdb"))
    actual = without_provenance(relations(split, "postgres"))
    assert_same_across_engines(expected, actual, "postgres incremental")
