"""Models that do not depend on each other are built at once (`targets.duckdb.concurrency`):
the same relations as one by one, the same skips downstream of a failure, one published file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.built import Built
from support.compare import assert_same, loaded_content
from support.project import ProjectHarness

from runner.artifacts import BuildResult
from runner.context import Context
from runner.errors import ConfigError
from runner.events import BuildEvent, ModelFinished, ModelStarted


def with_concurrency(project: ProjectHarness, workers: int | str) -> ProjectHarness:
    path = project.root / "arpu.yml"
    config = yaml.safe_load(path.read_text())
    config["targets"]["duckdb"]["concurrency"] = workers
    path.write_text(yaml.safe_dump(config))
    return project


def test_concurrent_build_equals_one_by_one(tmp_path: Path) -> None:
    one = with_concurrency(ProjectHarness(tmp_path / "one", with_sample=True), 1)
    many = with_concurrency(ProjectHarness(tmp_path / "many", with_sample=True), 4)
    with Context(many.root) as ctx:
        assert ctx.engine().concurrency == 4
        order = ctx.compiler().graph.order
        concurrent, overlapped = _overlapping(ctx)
    assert overlapped, "no two models ran at the same time"
    sequential = one.build()
    assert sequential.success and concurrent.success
    # reported in dependency order either way
    assert [r.model for r in sequential.results] == [r.model for r in concurrent.results] == order
    assert_same(loaded_content(one), loaded_content(many), "concurrency 1 vs 4")


def _overlapping(ctx: Context) -> tuple[BuildResult, bool]:
    """Build: the result, and whether two models were ever in progress together."""
    live: set[str] = set()
    seen_together = False

    def on_event(event: BuildEvent) -> None:
        nonlocal seen_together
        if isinstance(event, ModelStarted):
            live.add(event.model)
            seen_together = seen_together or len(live) > 1
        elif isinstance(event, ModelFinished):
            live.discard(event.model)

    result = ctx.build(on_event=on_event)
    return result, seen_together


def test_failure_skips_only_descendants_when_concurrent(tmp_path: Path) -> None:
    project = with_concurrency(ProjectHarness(tmp_path / "p", with_sample=True), 4)
    dim = project.root / "models" / "marts" / "dim_users.sql"
    dim.write_text(dim.read_text().rstrip() + "\nwhere cast('x' as integer) = 1\n")  # fails
    result = project.build()
    status = {r.model: r for r in result.results}
    assert not result.success
    assert status["dim_users"].status == "error"
    assert "Conversion Error" in (status["dim_users"].error or "")
    with Context(project.root) as ctx:
        graph = ctx.compiler().graph
        below = {n for n in graph.order if "dim_users" in graph.ancestors(n)}
    assert below, "dim_users has descendants"
    for name in below:
        assert status[name].status == "skipped", name
    for name in set(status) - below - {"dim_users"}:
        assert status[name].status == "success", name
    assert not (project.root / "arpu.duckdb").exists()  # nothing published
    assert not list(project.root.glob("arpu.duckdb.publishing-*"))


@pytest.mark.parametrize("bad", [0, -1, "two"])
def test_concurrency_must_be_a_positive_integer(tmp_path: Path, bad: object) -> None:
    project = with_concurrency(ProjectHarness(tmp_path / "p"), bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="concurrency"):
        Context(project.root)


def test_default_concurrency_follows_the_size_of_the_data(tmp_path: Path) -> None:
    """Unset, models overlap only while a query cannot use every DuckDB thread on its own:
    fewer rows in the work database than one row group (122,880 rows) per thread."""
    project = ProjectHarness(tmp_path / "p", with_sample=True)
    path = project.root / "arpu.yml"
    config = yaml.safe_load(path.read_text())
    config["targets"]["duckdb"]["threads"] = 2
    path.write_text(yaml.safe_dump(config))
    with Context(project.root) as ctx:
        ctx.ensure_sources()  # the sample: about 100k rows, under 2 row groups
        engine = ctx.engine()
        assert engine.concurrency == 2
        engine.execute("create table filler as select range as n from range(150000)")
        assert engine.concurrency == 1  # 250k rows: each model keeps both threads busy


def test_a_build_that_continues_incremental_models_overlaps_them(
        sample_built_by_context: Built, tmp_path: Path) -> None:
    """On data that keeps both threads busy, a build that continues incremental models from
    the published file still runs two at once (they read their new rows); a full build runs
    one at a time."""
    project = sample_built_by_context.copy(tmp_path / "p")
    path = project.root / "arpu.yml"
    config = yaml.safe_load(path.read_text())
    config["targets"]["duckdb"]["threads"] = 2
    path.write_text(yaml.safe_dump(config))
    with Context(project.root) as ctx:
        engine = ctx.engine()
        engine.execute("create table filler as select range as n from range(150000)")
        for incremental, expected in ((["stg_events", "int_orders"], 2), ([], 1)):
            engine.begin_build(carry=["rejected_events"], incremental=incremental)
            try:
                assert engine.concurrency == expected, incremental
            finally:
                engine.abandon_build()
