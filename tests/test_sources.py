"""The raw tables on their own (runner/sources.py), on DuckDB, without models: the sample a
fresh project loads, removed when a user's data arrives (and remembered until a full build), the
rows of an ingest that never finished, and the last load a build processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.config import Source
from runner.context import Context
from runner.engines.base import SAMPLE_LOADS
from runner.sources import RawSources

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = FIXTURES / "cohort.ndjson"  # 14 messages, standing in for the bundled sample
USER_DATA = FIXTURES / "dedupe_messages.ndjson"  # 10 lines


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    """A project with no arpu.yml: the default DuckDB target in tmp_path."""
    with Context(tmp_path) as context:
        yield context


@pytest.fixture
def sources(ctx: Context) -> RawSources:
    return RawSources(ctx.engine, ctx.config.source, SAMPLE, ctx.project_dir)


def loads(ctx: Context) -> list[tuple[int, int]]:
    return [(int(r[0]), int(r[1])) for r in ctx.engine().fetch(
        "select load_id, loaded from raw_loads order by 1")[1]]


def test_a_fresh_project_loads_the_sample_once(ctx: Context, sources: RawSources) -> None:
    first = sources.ensure()
    assert first is not None and first.loaded == 14
    assert sources.ensure() is None  # something is loaded: nothing more
    assert loads(ctx) == [(1, 14)]
    assert ctx.engine().fetch(f"select load_id, removed from {SAMPLE_LOADS}")[1] == [(1, False)]


def test_no_sample_file_no_load(ctx: Context, tmp_path: Path) -> None:
    sources = RawSources(ctx.engine, ctx.config.source, tmp_path / "missing.ndjson",
                         ctx.project_dir)
    assert sources.ensure() is None
    assert loads(ctx) == []  # the raw tables exist, empty


def test_a_users_data_removes_the_sample_until_a_full_build(ctx: Context,
                                                            sources: RawSources) -> None:
    sources.ensure()
    assert not sources.removed_loads_pending()
    result = sources.ingest([USER_DATA])
    assert sources.sample_removed == 14
    assert loads(ctx) == [(2, result.loaded)]
    assert int(ctx.engine().scalar("select count(*) from raw_events where load_id = 1")) == 0
    assert sources.removed_loads_pending()  # incremental models must not continue
    sources.forget_removed_loads()
    assert not sources.removed_loads_pending()
    sources.ingest([USER_DATA])
    assert sources.sample_removed == 0  # only a sample is removed, never a user's load


def test_a_new_sample_replaces_the_previous_one(ctx: Context, sources: RawSources) -> None:
    sources.ensure()
    sources.ingest([SAMPLE], sample=True)
    assert sources.sample_removed == 14
    assert loads(ctx) == [(2, 14)]
    assert ctx.engine().fetch(f"select load_id, removed from {SAMPLE_LOADS} order by 1"
                              )[1] == [(1, True), (2, False)]


def test_rows_of_an_unfinished_ingest_are_discarded(ctx: Context, sources: RawSources) -> None:
    """An ingest killed half-way left rows above the newest recorded load, in both raw tables:
    they go, the recorded ones stay, and the count adds up over the command."""
    sources.ingest([FIXTURES / "rejects.ndjson"])  # good lines and bad ones
    engine = ctx.engine()
    kept = int(engine.scalar("select count(*) from raw_events"))
    rejected = int(engine.scalar("select count(*) from raw_rejected"))
    assert kept > 0 and rejected > 0
    for table in ("raw_events", "raw_rejected"):  # a copy of load 1 as an unrecorded load 2
        engine.execute(f"insert into {table} select * replace (load_id + 1 as load_id) "
                       f"from {table} where load_id = 1")
    assert sources.discard_unfinished_loads() == kept + rejected
    assert int(engine.scalar("select count(*) from raw_events")) == kept
    assert int(engine.scalar("select count(*) from raw_rejected")) == rejected
    assert sources.discard_unfinished_loads() == 0
    assert sources.unfinished_discarded == kept + rejected


def test_the_batch_is_the_newest_load(ctx: Context, sources: RawSources) -> None:
    assert sources.batch_load_id() is None  # nothing loaded: no raw_loads yet
    sources.ingest([USER_DATA])
    sources.ingest([SAMPLE])
    assert sources.batch_load_id() == 2


def test_segment_warehouse_tables_are_not_tracked(ctx: Context) -> None:
    warehouse = RawSources(ctx.engine, Source(format="segment_warehouse"), SAMPLE,
                           ctx.project_dir)
    assert warehouse.ensure() is None
    assert warehouse.batch_load_id() is None
    assert not warehouse.removed_loads_pending()
    assert not ctx.engine().relation_exists("raw_loads")  # nothing was created
