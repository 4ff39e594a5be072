"""What the ClickHouse engine does differently (runner/engines/clickhouse.py), on embedded
ClickHouse (chdb). That its numbers equal DuckDB's is tests/test_engines.py's."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.compare import SPEC_KEYS, assert_same_across_engines, loaded_content, relations
from support.project import FIXTURES, ProjectHarness, run_arpu

from runner.context import Context
from runner.engines.clickhouse import _bind, as_written

pytest.importorskip("chdb")
pytestmark = [pytest.mark.clickhouse]


def _columns(name: str) -> list[str]:
    return {"t": ["a", "b"], "u": ["a", "c"]}.get(name, [])


def test_selected_columns_are_named_as_the_models_mean() -> None:
    """ClickHouse names `s.a` 's.a' when another joined table has an `a`; a comparison is a
    UInt8; a cast to timestamp keeps seconds only. As run, all three are as in DuckDB."""
    sql = as_written(
        "WITH w AS (SELECT t.*, u.c, t.a = u.a AS same FROM t JOIN u ON t.a = u.a) "
        "SELECT s.a, w.* , CAST(NULL AS Nullable(DateTime)) AS at FROM w AS s "
        "JOIN w ON s.a = w.a", _columns)
    assert '"t"."a" AS "a", "t"."b" AS "b", u.c AS "c"' in sql
    assert 'CAST(t.a = u.a AS Nullable(Bool)) AS "same"' in sql
    assert 's.a AS "a", "w"."a" AS "a", "w"."b" AS "b", "w"."c" AS "c", "w"."same" AS "same"' in sql
    assert "CAST(NULL AS Nullable(DateTime64(6, 'UTC'))) AS at" in sql


def test_placeholders_become_typed_parameters_outside_string_literals() -> None:
    sql, params = _bind("select '?', x from t where a = ? and b in ? and c = 'it''s ?' "
                        "and d = ?", ["m", [1, 2], dt.datetime(2026, 3, 1)])
    assert sql == ("select '?', x from t where a = {p0:String} and b in {p1:Array(Int64)} "
                   "and c = 'it''s ?' and d = {p2:DateTime64(6, 'UTC')}")
    assert params == {"p0": "m", "p1": [1, 2], "p2": dt.datetime(2026, 3, 1)}


def test_raw_tables_keep_microseconds_and_json_text(arpu_project: ProjectHarness) -> None:
    with Context(arpu_project.root, target="clickhouse") as ctx:
        ctx.ingest([FIXTURES / "event_time.ndjson"])
        engine = ctx.engine()
        types = dict(engine.fetch("select name, type from system.columns where database = ? "
                                  "and table = 'raw_events'", ["arpu__work"])[1])
        assert types["event_ts"] == "Nullable(DateTime64(6, 'UTC'))"
        assert types["properties"] == "Nullable(String)"
        stamps = [r[0] for r in engine.fetch("select event_ts from raw_events")[1]]
    with Context(arpu_project.root) as ctx:
        ctx.ingest([FIXTURES / "event_time.ndjson"])
        expected = [r[0] for r in ctx.engine().fetch("select event_ts from raw_events")[1]]
    assert sorted(stamps) == sorted(expected)  # naive UTC, to the microsecond
    assert any(s.microsecond for s in stamps)


@pytest.mark.slow
def test_incremental_builds_match_one_duckdb_build(tmp_path: Path) -> None:
    """Two loads with a build after each (stg_events merged into a table exchanged in) give
    the relations of one DuckDB build of both; a watermark left behind its rows (a build
    killed between the two) makes the next build process those loads again, to the same
    relations."""
    files = sorted(FIXTURES.glob("*.ndjson"))
    half = len(files) // 2
    whole = ProjectHarness(tmp_path / "whole")
    with Context(whole.root) as ctx:
        ctx.ingest(files)
        assert ctx.build().success
    split = ProjectHarness(tmp_path / "split")
    for part in (files[:half], files[half:]):
        with Context(split.root, target="clickhouse") as ctx:
            ctx.ingest(part)
            result = ctx.build()
        assert result.success, [(r.model, r.error) for r in result.results if r.error]
        assert [r.rows for r in result.results if r.model == "stg_events"] != [None]
    expected = loaded_content(whole, "duckdb")
    actual = loaded_content(split, "clickhouse")
    assert_same_across_engines(expected, actual, "clickhouse incremental")
    with Context(split.root, target="clickhouse") as ctx:
        engine = ctx.engine()
        assert engine.watermarks()["stg_events"] == len(files)  # one load per file
        engine.execute(f"insert into arpu_watermarks values ('stg_events', {half}, now64(6))")
        engine.delete_where("arpu_watermarks", f"load_id > {half}")
        assert engine.watermarks()["stg_events"] == half
        assert ctx.build().success
    again = loaded_content(split, "clickhouse")
    assert_same_across_engines(expected, again, "clickhouse, loads processed twice")


@pytest.mark.slow
def test_a_failed_or_killed_build_leaves_the_published_tables(tmp_path: Path) -> None:
    """Models are built in arpu__work; readers see arpu, which only a build that passed
    changes, table by table with EXCHANGE TABLES."""
    project = ProjectHarness(tmp_path / "project")
    with Context(project.root, target="clickhouse") as ctx:
        ctx.ingest(sorted(FIXTURES.glob("*.ndjson")))
        assert ctx.build().success
    published = relations(project, "clickhouse")
    with Context(project.root, target="clickhouse",
                 vars={"target_category": "no such category"}) as ctx:
        result = ctx.build()
    assert not result.success
    assert relations(project, "clickhouse") == published
    later = tmp_path / "later.ndjson"
    later.write_text('{"type": "page", "messageId": "later-1", "userId": "u-later", '
                     '"timestamp": "2026-03-20T10:00:00.250Z"}\n')
    with Context(project.root, target="clickhouse") as ctx:
        ctx.ingest([later])  # a new load: new numbers
    killed = run_arpu(project.root, "build", "--target", "clickhouse",
                      fault="model:fct_orders")
    assert killed.returncode != 0
    assert relations(project, "clickhouse") == published
    assert run_arpu(project.root, "build", "--target", "clickhouse").returncode == 0
    rebuilt = relations(project, "clickhouse")
    assert len(rebuilt["stg_events"]) == len(published["stg_events"]) + 1


def test_expectations_are_checked_in_plain_sql(arpu_project: ProjectHarness) -> None:
    """Great Expectations has no SQLAlchemy dialect for chdb: arpu's own SQL checks give the
    verdict, with the observed value and failing rows, in the build and in `arpu test`."""
    with Context(arpu_project.root, target="clickhouse") as ctx:
        ctx.ingest([FIXTURES / "dedupe_orders.ndjson"])
        assert ctx.build().success
    extra = arpu_project.root / "models" / "marts" / "fct_orders.yml"
    extra.write_text(extra.read_text() + "  - type: expect_column_values_to_be_between\n"
                     "    column: revenue\n    max_value: 20\n")
    with Context(arpu_project.root, target="clickhouse") as ctx:
        tested = ctx.test(select=["fct_orders"])  # what is published
        built = ctx.build(select=["fct_orders"])
    for run in (tested, built):
        failed = [e for r in run.results for e in r.expectations if not e["success"]]
        assert [e["expectation"] for e in failed] == [
            "expect_column_values_to_be_between(revenue, max_value=20)"]
        bad, total = failed[0]["observed"].split(" unexpected of ")
        assert 0 < int(bad) < int(total)
        assert len(failed[0]["failing_examples"]) == min(int(bad), 5) and all(
            row["revenue"] > 20 for row in failed[0]["failing_examples"])
    assert len([e for r in tested.results for e in r.expectations if e["success"]]) > 5
    junit = (arpu_project.root / "target" / "junit.xml").read_text()
    assert "revenue, max_value=20" in junit


def test_a_second_process_is_told_the_folder_is_open(arpu_project: ProjectHarness) -> None:
    """Embedded ClickHouse serves one process at a time: the other gets one line."""
    with Context(arpu_project.root, target="clickhouse") as ctx:
        ctx.ingest([FIXTURES / "event_time.ndjson"])
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import sys, time
            from chdb import session
            s = session.Session({str(arpu_project.root / 'target' / 'clickhouse')!r})
            print('open', flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        shown = run_arpu(arpu_project.root, "show", "raw_loads", "--target", "clickhouse")
    finally:
        holder.communicate("", timeout=60)
    assert shown.returncode == 1
    assert "another process has it open" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_a_server_target_through_clickhouse_connect(arpu_project: ProjectHarness,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The server path (`host` set) end to end through clickhouse-connect's client, whose
    in-process chdb interface stands in for the server: no ClickHouse server runs here, so
    what this leaves untested is the HTTP transport."""
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    get_client = clickhouse_connect.get_client
    asked: list[dict[str, Any]] = []

    def in_process(**options: Any) -> Any:
        asked.append(options)
        try:
            return get_client(interface="chdb", path=str(arpu_project.root / "server-data"),
                              settings=options["settings"])
        except TypeError:
            pytest.skip("this clickhouse-connect has no chdb interface")

    monkeypatch.setattr(clickhouse_connect, "get_client", in_process)
    monkeypatch.setenv("ARPU_CH_SECRET", "s3cret")
    config = arpu_project.root / "arpu.yml"
    config.write_text(config.read_text().replace(
        "targets:\n", "targets:\n  server: {type: clickhouse, host: ch.example, port: 8443, "
        "secure: true, user: arpu, password_env: ARPU_CH_SECRET, database: shop}\n", 1))
    files = sorted(FIXTURES.glob("*.ndjson"))
    with Context(arpu_project.root, target="server") as ctx:
        ctx.ingest(files)
        result = ctx.build()
        assert result.success, [(r.model, r.error) for r in result.results if r.error]
        served = {name: ctx.rows(name, order_by=key) for name, key in SPEC_KEYS.items()}
        databases = {r[0] for r in ctx.reader().fetch("select name from system.databases")[1]}
    assert {"shop", "shop__work"} <= databases
    assert asked[0]["host"] == "ch.example" and asked[0]["port"] == 8443
    assert asked[0]["secure"] is True and asked[0]["username"] == "arpu"
    assert asked[0]["password"] == "s3cret"
    with Context(arpu_project.root) as ctx:
        ctx.ingest(files)
        assert ctx.build().success
    assert_same_across_engines(relations(arpu_project, "duckdb"), served,
                               "clickhouse through a client")
