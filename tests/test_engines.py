"""The same models give the same numbers on DuckDB, PostgreSQL, Spark (local mode) and ClickHouse
(embedded, chdb)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, SPEC_KEYS, ProjectHarness, use_isolated_targets

from runner.context import Context

pytestmark = [pytest.mark.slow]
IGNORED = {"properties", "traits", "loaded_at", "load_id", "updated_load"}  # JSON, loads


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):  # as UTC, naive (ClickHouse's DateTime64 has a zone)
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None)
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)  # money and rates
    return bool(a == b)  # counts, keys and timestamps exactly


def relations(project: ProjectHarness, target: str) -> dict[str, list[dict[str, Any]]]:
    with Context(project.root, target=target) as ctx:
        return {name: ctx.rows(name, order_by=key) for name, key in SPEC_KEYS.items()}


def assert_same(expected: dict[str, list[dict[str, Any]]],
                actual: dict[str, list[dict[str, Any]]], engine: str,
                only: set[str] | None = None) -> None:
    for name in sorted(only or SPEC_KEYS):
        left, right = expected[name], actual[name]
        assert len(left) == len(right), f"{engine}: {name} has {len(right)} rows, not {len(left)}"
        for row_a, row_b in zip(left, right, strict=True):
            for column, value in row_a.items():
                if column in IGNORED:
                    continue
                assert column in row_b, f"{engine}: {name}.{column} missing"
                assert _same(_plain(value), _plain(row_b[column])), (
                    f"{engine}: {name}.{column}: {value!r} != {row_b[column]!r} in {row_a}")


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


def build_everywhere(project: ProjectHarness, engines: tuple[str, ...], **vars: Any) -> None:
    for target in ("duckdb", *engines):
        with Context(project.root, target=target, vars=vars or None) as ctx:
            result = ctx.build()
        assert result.success, (target, [(r.model, r.error) for r in result.results if r.error])


ENGINES = ("postgres", "spark", "clickhouse")  # each compared with DuckDB


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.clickhouse
def test_sample_is_the_same_on_duckdb_postgres_spark_and_clickhouse(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project", with_sample=True)
    use_isolated_targets(project, "sample")
    build_everywhere(project, ENGINES)
    duck = relations(project, "duckdb")
    assert len(duck["stg_events"]) > 90_000
    for engine in ENGINES:
        assert_same(duck, relations(project, engine), engine)


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
    build_everywhere(project, ENGINES, funnel_reentry=True,
                     conversion_window_days=3, promo_start="2026-03-09")
    duck = relations(project, "duckdb")
    assert duck["category_funnel"] and duck["experiment_results"]
    for engine in ENGINES:
        assert_same(duck, relations(project, engine), engine)


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
    expected, actual = relations(whole, "duckdb"), relations(split, "postgres")
    # which load and line a message came from differs by construction
    for rows in (expected["stg_events"], actual["stg_events"]):
        for row in rows:
            for column in ("source_file", "line_number", "record_number"):
                row.pop(column, None)
    for rows in (expected["rejected_events"], actual["rejected_events"]):
        rows.sort(key=lambda r: (r["raw"], r["reason"]))
        for row in rows:
            row.pop("line_number", None)
    assert_same(expected, actual, "postgres incremental")
