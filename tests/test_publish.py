"""Atomic, BI-safe publishing: readers always get a complete, consistent set of relations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from support.built import Built
from support.engines import FIXTURE_FILES
from support.project import (
    POSTGRES_DSN,
    ProjectHarness,
    drop_postgres_schemas,
    use_isolated_targets,
)
from support.project import run_arpu as arpu

from runner.context import Context

READER = r"""
import json, os, sys, time, duckdb
path, stop = sys.argv[1], sys.argv[2]
errors, queries, snapshots = [], 0, set()
con = duckdb.connect(path, read_only=True)  # a BI tool's connection, held across builds
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists(stop):  # until the builds are over
    try:
        if queries % 20 == 19:  # and new connections now and then, as a dashboard makes them
            con.close()
            con = duckdb.connect(path, read_only=True)
        lines, count_sum, viewers = con.execute(
            "select (select count(*) from fct_product_purchases), "
            "(select sum(product_count) from fct_orders), "
            "(select sum(viewers) from category_funnel)").fetchall()[0]
        if lines != count_sum:
            errors.append(f"inconsistent snapshot: {lines} lines, {count_sum} in orders")
        snapshots.add(viewers)
        queries += 1
        time.sleep(0.01)  # a busy dashboard, not a spinning one: the builds keep their CPU
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"errors": errors[:5], "error_count": len(errors), "queries": queries,
                  "snapshots": sorted(snapshots)}))
"""


def published(project: ProjectHarness) -> dict[str, object]:
    """What a reader sees: a few numbers from several relations, checked for consistency."""
    con = duckdb.connect(str(project.root / "arpu.duckdb"), read_only=True)
    try:
        lines, count_sum, orders, viewers, arpu_rows = con.execute(
            "select (select count(*) from fct_product_purchases), "
            "(select sum(product_count) from fct_orders), (select count(*) from fct_orders), "
            "(select sum(viewers) from category_funnel), "
            "(select count(*) from arpu_timeseries)").fetchall()[0]
    finally:
        con.close()
    assert lines == count_sum
    return {"orders": orders, "viewers": viewers, "arpu_rows": arpu_rows}


@pytest.fixture
def sample(sample_built_by_cli: Built, tmp_path: Path) -> ProjectHarness:
    """A fresh project after `arpu build` (built once per session; this test's copy)."""
    returncode, _, stderr = sample_built_by_cli.outcome
    assert returncode == 0, stderr
    return sample_built_by_cli.copy(tmp_path / "project")


def test_publish_writes_the_target_path_and_keeps_work_apart(sample: ProjectHarness) -> None:
    assert (sample.root / "arpu.duckdb").exists() and (sample.root / "arpu.work.duckdb").exists()
    con = duckdb.connect(str(sample.root / "arpu.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables")
              .fetchall()}
    con.close()
    assert {"stg_events", "fct_orders", "arpu_timeseries", "experiment_results"} <= tables
    assert not any(t.startswith("raw_") for t in tables)  # raw data stays in the work file
    assert not list(sample.root.glob("arpu.duckdb.publishing-*"))


def test_reader_never_errs_while_builds_run(sample: ProjectHarness, tmp_path: Path) -> None:
    script = tmp_path / "reader.py"
    script.write_text(READER)
    stop = tmp_path / "builds-done"
    reader = subprocess.Popen([sys.executable, str(script), str(sample.root / "arpu.duckdb"),
                               str(stop)], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    builds = []
    for window in (3, 7, 1, 7):  # different windows: the published numbers change
        vars_ = json.dumps({"conversion_window_days": window})
        builds.append(arpu(sample.root, "build", "--vars", vars_).returncode)
    time.sleep(0.5)  # reads of the last published file too
    stop.touch()
    out, _ = reader.communicate(timeout=150)
    report = json.loads(out)
    assert builds == [0, 0, 0, 0]  # a held read-only connection does not block a build
    assert report["error_count"] == 0, report["errors"]
    assert report["queries"] > 100
    assert len(report["snapshots"]) >= 1


@pytest.mark.parametrize("fault", ["model:stg_events", "model:fct_orders",
                                   "model:category_opportunities", "model:arpu_timeseries",
                                   "publish"])
def test_killed_build_leaves_the_published_relations_intact(sample: ProjectHarness,
                                                            fault: str) -> None:
    before = published(sample)
    proc = arpu(sample.root, "build", "--vars", '{"conversion_window_days": 1}', fault=fault)
    assert proc.returncode == -9  # SIGKILL
    assert published(sample) == before  # old numbers, consistent, readable
    proc = arpu(sample.root, "build", "--vars", '{"conversion_window_days": 1}')
    assert proc.returncode == 0, proc.stderr  # recovers without manual cleanup
    after = published(sample)
    assert after["viewers"] == before["viewers"] and after["orders"] == before["orders"]
    assert not list(sample.root.glob("arpu.duckdb.publishing-*"))
    with Context(sample.root) as ctx:
        funnel = {r["category"]: r for r in ctx.rows("category_funnel")}
    assert funnel["Home Supplies"]["purchasers"] < before["viewers"]  # the 1-day window is live


def test_ctrl_c_while_publishing_leaves_no_file_behind(sample: ProjectHarness,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (KeyboardInterrupt) while the new file is synced, before the rename: the
    published file as it was and no `.publishing-*` file left. Before: the build had let go of
    the file it wrote, so nothing removed it (seen in the ctrl-c test, at 55% of a build)."""
    import runner.engines.duckdb as engine

    before = published(sample)
    real_fsync = engine.os.fsync

    def interrupted(fd: int) -> None:
        if ".publishing-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(engine.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample.build(conversion_window_days=1)
    monkeypatch.undo()
    assert published(sample) == before
    assert not list(sample.root.glob("arpu.duckdb.publishing-*"))


def test_failed_build_publishes_nothing(sample: ProjectHarness) -> None:
    before = published(sample)
    funnel = sample.root / "models" / "marts" / "category_funnel.sql"
    # rates above 1 break an error expectation: the build fails after building this model
    funnel.write_text(funnel.read_text().replace(
        "{{ safe_div('purchasers', 'viewers') }} as conversion_rate",
        "2 * {{ safe_div('purchasers', 'viewers') }} as conversion_rate"))
    proc = arpu(sample.root, "build")
    assert proc.returncode == 1
    assert published(sample) == before


def test_late_event_lands_in_its_own_period(sample: ProjectHarness, tmp_path: Path) -> None:
    late = tmp_path / "late.ndjson"
    late.write_text(json.dumps({
        "type": "track", "event": "Order Completed", "messageId": "late-order-1",
        "userId": "late-user", "timestamp": "2025-06-15T12:00:00Z",
        "receivedAt": "2026-04-20T00:00:00Z",
        "properties": {"order_id": "late-1", "revenue": 123.45, "products": []}}) + "\n")
    assert arpu(sample.root, "ingest", str(late)).returncode == 0
    assert arpu(sample.root, "build").returncode == 0
    with Context(sample.root) as ctx:
        rows = [r for r in ctx.rows("arpu_timeseries")
                if r["grain"] == "month" and r["segment"] == "all"
                and r["period_start"].isoformat() == "2025-06-01"]
    assert len(rows) == 1
    assert (rows[0]["revenue"], rows[0]["active_users"], rows[0]["purchasers"]) == (123.45, 1, 1)


@pytest.mark.postgres
def test_postgres_publishes_by_schema_swap(tmp_path: Path) -> None:
    import psycopg

    project = ProjectHarness(tmp_path / "pg")  # the hand fixtures: windows 7 and 1 differ
    use_isolated_targets(project, "publish")
    with Context(project.root, target="postgres") as ctx:
        schema = ctx.compiler().published_schema
    try:
        files = [str(f) for f in FIXTURE_FILES]
        assert arpu(project.root, "ingest", "--target", "postgres", *files).returncode == 0
        assert arpu(project.root, "build", "--target", "postgres").returncode == 0

        def snapshot() -> tuple[object, ...]:
            with psycopg.connect(POSTGRES_DSN) as pg:
                row = pg.execute(
                    f'select (select count(*) from "{schema}".fct_product_purchases), '
                    f'(select sum(product_count) from "{schema}".fct_orders), '
                    f'(select sum(purchasers) from "{schema}".category_funnel)').fetchone()
            assert row is not None and row[0] == row[1]
            return tuple(row)

        before = snapshot()
        proc = arpu(project.root, "build", "--target", "postgres", "--vars",
                    '{"conversion_window_days": 1}', fault="publish")
        assert proc.returncode == -9
        assert snapshot() == before  # the copy was made beside, the swap never happened
        assert arpu(project.root, "build", "--target", "postgres", "--vars",
                    '{"conversion_window_days": 1}').returncode == 0
        after = snapshot()
        assert after[0] == before[0] and after[2] < before[2]  # 1-day window, fewer purchasers
        with psycopg.connect(POSTGRES_DSN) as pg:
            left = pg.execute("select count(*) from pg_namespace where nspname = %s",
                              (f"{schema}__next",)).fetchone()
        assert left == (0,)
    finally:
        drop_postgres_schemas(schema)


def test_ingest_killed_between_files_keeps_what_it_loaded(tmp_path: Path) -> None:
    data = Path(__file__).parent / "fixtures"
    # a document is loaded alone; the small files after it share one transaction (a batch)
    files = [str(data / "batch_payload.json"), str(data / "funnel_window.ndjson"),
             str(data / "stitching.ndjson")]
    crashed = ProjectHarness(tmp_path / "crashed")
    proc = arpu(crashed.root, "ingest", *files, fault="ingest:file")
    assert proc.returncode == -9  # killed right after the first file was committed
    loads = crashed.rows("raw_loads")
    assert [Path(r["source_file"]).name for r in loads] == ["batch_payload.json"]
    assert loads[0]["lines_read"] == loads[0]["loaded"] + loads[0]["rejected"] > 0
    batched = ProjectHarness(tmp_path / "batched")
    assert arpu(batched.root, "ingest", *files[1:], fault="ingest:file").returncode == -9
    loads = batched.rows("raw_loads")  # the batch was committed whole before the kill
    assert [Path(r["source_file"]).name for r in loads] == ["funnel_window.ndjson",
                                                            "stitching.ndjson"]
    assert all(r["lines_read"] == r["loaded"] + r["rejected"] > 0 for r in loads)
    # ingesting everything again is idempotent at the message level
    assert arpu(crashed.root, "ingest", *files).returncode == 0
    assert arpu(crashed.root, "build").returncode == 0
    clean = ProjectHarness(tmp_path / "clean")
    assert arpu(clean.root, "ingest", *files).returncode == 0
    assert arpu(clean.root, "build").returncode == 0
    for name in ("fct_orders", "fct_product_views", "dim_users", "category_funnel"):
        key = {"fct_orders": "order_id", "fct_product_views": "event_id",
               "dim_users": "user_key", "category_funnel": "category"}[name]
        drop = {"updated_load"}
        assert [{k: v for k, v in r.items() if k not in drop}
                for r in crashed.rows(name, order_by=key)] == \
            [{k: v for k, v in r.items() if k not in drop}
             for r in clean.rows(name, order_by=key)], name
