"""The bundled sample and the hand fixtures built on each engine once per session, kept as what
the tests compare: the SPEC relations and the recipe's metric answers. Each engine builds in its
own copy of the project (so two pytest processes never build in one folder) and drops what it
wrote to a server; tests compare the pickled readings and open no engine themselves, so the
Spark tests of two modules share one Spark build and the other engines' builds run beside it.

Embedded ClickHouse (chdb) serves one data folder per process: its builds run in a process of
their own."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.context import Context
from runner.metrics.plan import QueryRequest
from runner.metrics.query import run_query

from .built import built_once, sample_with_metrics
from .compare import ACROSS_ENGINES, Relations, relations
from .project import FIXTURES, ROOT, ProjectHarness, drop_postgres_schemas, use_isolated_targets

ENGINES = ("postgres", "spark", "clickhouse")  # each compared with DuckDB
FIXTURE_FILES = sorted(FIXTURES.glob("*.ndjson")) + sorted(FIXTURES.glob("*.json"))
# the hand fixtures' edges are reached with non-default vars
FIXTURE_VARS = {"funnel_reentry": True, "conversion_window_days": 3, "promo_start": "2026-03-09"}

SAMPLE_QUERIES = [
    (["arpu", "arppu", "revenue", "active_users", "buyers"], ["metric_time__week"]),
    (["arpu", "aov"], ["metric_time__month", "user__segment"]),
    (["view_to_purchase_rate", "view_to_purchase_conversions"], ["funnel_entry__category"]),
    (["view_to_purchase_rate_any_view"], ["product_view__category"]),
    (["revenue_7d", "revenue_mtd", "revenue_wow_growth"], ["metric_time__week"]),
    (["median_order_revenue", "cohort_revenue", "avg_item_price"], []),
]
Answers = dict[int, list[dict[str, Any]]]


@dataclass(frozen=True)
class Reading:
    """One engine's build of a project: its SPEC relations and (the sample) metric answers."""

    relations: Relations
    answers: Answers


def sample_answers(ctx: Context) -> Answers:
    """The recipe's metrics over the sample, and a saved query's export, as rows."""
    out = {}
    for i, (metrics, group_by) in enumerate(SAMPLE_QUERIES):
        shown = run_query(ctx, QueryRequest(list(metrics), list(group_by))).shown
        out[i] = [dict(zip(shown.columns, row, strict=True)) for row in shown.rows]
    out[-1] = ctx.rows("weekly_arpu", "metric_time__week")
    return out


def _comparable(rels: Relations, root: Path) -> Relations:
    """What the cross-engine comparison reads (ACROSS_ENGINES it ignores: JSON text, nested
    up to the ingest limit, cannot even be pickled), with the files messages and rejected lines
    were loaded from relative to `root`, so that copies of one project read alike."""
    for rows in rels.values():
        for row in rows:
            for column in ACROSS_ENGINES.intersection(row):
                del row[column]
            if "source_file" in row:
                row["source_file"] = row["source_file"].replace(str(root), "<project>")
    rels["rejected_events"].sort(key=lambda r: (r["source_file"], r["line_number"]))
    return rels


def read(project: ProjectHarness, target: str, answers: bool) -> Reading:
    got: Answers = {}
    if answers:
        with Context(project.root, target=target) as ctx:
            got = sample_answers(ctx)
    return Reading(_comparable(relations(project, target), project.root), got)


def _drop_postgres_schema(project: ProjectHarness) -> None:
    import yaml

    schema = yaml.safe_load((project.root / "arpu.yml").read_text())["targets"]["postgres"][
        "schema"]
    drop_postgres_schemas(schema)


def build_and_read(root: Path, target: str, answers: bool, ingest: bool, vars: dict[str, Any]
                   ) -> Reading:
    """Build the project at `root` on `target` (ingesting the hand fixtures first when
    `ingest`) and read it; a server keeps nothing of it. Only the hand fixtures' builds run the
    expectations: that proves them on each engine, on the edges; the sample's build is
    `arpu run`, since relations equal to DuckDB's pass DuckDB's checks (on Spark that saves a
    third of the build)."""
    project = ProjectHarness.existing(root)
    try:
        with Context(root, target=target, vars=vars or None) as ctx:
            if ingest:
                loaded = ctx.ingest(FIXTURE_FILES)
                assert loaded.lines_read == loaded.loaded + loaded.rejected
            result = ctx.build(validate=ingest)
        assert result.success, (target, [(r.model, r.error) for r in result.results if r.error])
        return read(project, target, answers)
    finally:
        if target == "postgres":
            _drop_postgres_schema(project)


def _in_own_process(root: Path, target: str, answers: bool, ingest: bool,
                    vars: dict[str, Any]) -> Reading:
    out = root / f"{target}.reading.pickle"
    code = ("import pickle, sys; sys.path[:0] = [sys.argv[1]]; "
            "from support.engines import build_and_read; "
            "args = pickle.loads(bytes.fromhex(sys.argv[2])); "
            "open(sys.argv[3], 'wb').write(pickle.dumps(build_and_read(*args)))")
    args = pickle.dumps((root, target, answers, ingest, vars)).hex()
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests"), args, str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return pickle.loads(out.read_bytes())


def _on(root: Path, target: str, answers: bool, ingest: bool, vars: dict[str, Any]
        ) -> Reading:
    if target == "clickhouse":
        return _in_own_process(root, target, answers, ingest, vars)
    return build_and_read(root, target, answers, ingest, vars)


def sample_on(tmp_path_factory: pytest.TempPathFactory, target: str) -> Reading:
    """The sample with metrics/ built on `target` (DuckDB's is the session's shared build)."""
    base = built_once(tmp_path_factory, "sample_with_metrics", sample_with_metrics)
    if target == "duckdb":
        result = base.outcome
        assert result.success, [r.error for r in result.results if r.error]
        return built_once(tmp_path_factory, "sample_read_on_duckdb",
                          lambda _: read(base.project, "duckdb", answers=True)).outcome

    def build(root: Path) -> Reading:
        copy = base.copy(root)
        use_isolated_targets(copy, f"sample_{target}")
        return _on(root, target, answers=True, ingest=False, vars={})

    return built_once(tmp_path_factory, f"sample_on_{target}", build).outcome


def fixtures_on(tmp_path_factory: pytest.TempPathFactory, target: str) -> Reading:
    """The hand fixtures ingested and built on `target` with FIXTURE_VARS, in a fresh project."""

    def build(root: Path) -> Reading:
        use_isolated_targets(ProjectHarness(root), f"fixtures_{target}")
        return _on(root, target, answers=False, ingest=True, vars=FIXTURE_VARS)

    return built_once(tmp_path_factory, f"fixtures_on_{target}", build).outcome

