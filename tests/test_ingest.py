"""`arpu ingest`: formats, accounting (read = loaded + rejected) and reasons."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from support.project import ProjectHarness

DATA = Path(__file__).parent / "data"


def test_bad_lines_are_rejected_with_file_line_and_reason(arpu_project: ProjectHarness) -> None:
    res = arpu_project.ingest(DATA / "bad_lines.ndjson")
    # 13 physical lines, 2 blank (line 2 empty, line 10 spaces only): 11 read, 3 good
    assert (res.lines_read, res.loaded, res.rejected) == (11, 3, 8)
    arpu_project.build(["rejected_events"])
    rejected = arpu_project.rows("rejected_events", order_by="line_number")
    assert [(r["line_number"], r["reason"]) for r in rejected] == [
        (4, "not valid JSON"),  # NaN is not JSON (RFC 8259), though DuckDB would read it
        (5, "not valid JSON"),  # trailing comma, idem
        (6, "not valid JSON"),
        (7, "not a JSON object"),
        (8, "neither userId nor anonymousId"),
        (9, "no event time (timestamp, originalTimestamp, receivedAt)"),
        (11, "properties.products[1].price is negative"),  # 0-based index in the array
        (12, "properties.revenue is not a number"),
    ]
    assert rejected[2]["raw"] == "this is not json"
    assert all(r["source_file"].endswith("bad_lines.ndjson") for r in rejected)


def test_gzip_and_reingest_change_nothing(arpu_project: ProjectHarness, tmp_path: Path) -> None:
    gz = tmp_path / "bad_lines.ndjson.gz"
    with open(DATA / "bad_lines.ndjson", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    first = arpu_project.ingest(gz)
    assert (first.lines_read, first.loaded, first.rejected) == (11, 3, 8)
    arpu_project.build()
    keys = {"stg_events": "event_id", "fct_orders": "order_id", "rejected_events": "line_number"}
    before = {r: arpu_project.rows(r, order_by=k) for r, k in keys.items()}
    arpu_project.ingest(gz)
    result = arpu_project.build()
    assert result.duplicates_removed == 3
    after = {r: arpu_project.rows(r, order_by=k) for r, k in keys.items()}
    for name in before:
        drop = {"loaded_at", "load_id", "updated_load"}  # load bookkeeping
        assert [{k: v for k, v in row.items() if k not in drop} for row in before[name]] == \
            [{k: v for k, v in row.items() if k not in drop} for row in after[name]], name


def test_batch_and_array_documents(arpu_project: ProjectHarness) -> None:
    batch = arpu_project.ingest(DATA / "batch.json")
    assert (batch.lines_read, batch.loaded, batch.rejected) == (3, 2, 1)
    array = arpu_project.ingest(DATA / "array.json")
    assert (array.lines_read, array.loaded, array.rejected) == (2, 2, 0)
    arpu_project.build(["rejected_events", "stg_events"])
    rejected = arpu_project.rows("rejected_events")
    assert [(r["line_number"], r["reason"]) for r in rejected] == [
        (7, "neither userId nor anonymousId")]
    events = arpu_project.rows("stg_events", order_by="event_id")
    assert [(e["event_id"], e["event_name"], e["line_number"]) for e in events] == [
        ("b1", "identify", 3), ("b2", "Product Viewed", 5), ("c1", "Product Viewed", 2),
        ("c2", "page", 3)]


def test_every_reference_example_is_accounted_for(
    arpu_project: ProjectHarness, segment_examples: list[Path]
) -> None:
    files = segment_examples
    assert len(files) >= 39
    res = arpu_project.ingest(*files)
    assert res.lines_read == res.loaded + res.rejected
    # two of the four batch messages carry "2015-2-02T..." (not ISO 8601) and are rejected; the
    # other two and the four full payloads with an identity load
    assert res.loaded == 6
    for f in res.files:
        assert f.lines_read == f.loaded + f.rejected >= 1, f.path


def test_crlf_lines_and_large_gzip_members_keep_every_line(tmp_path: Path) -> None:
    """Two gzip members, each inflating to several read blocks from little input (the block
    loop's `unconsumed_tail` path), with CRLF line ends: every line is read once, in order,
    and only the line end's CR is dropped."""
    import json

    import duckdb

    from runner.ingest import BLOCK_BYTES, Loader, _blocks

    def line(i: int) -> str:
        return json.dumps({"type": "track", "event": "E", "messageId": f"m{i}", "userId": "u",
                           "timestamp": "2026-03-01T00:00:00Z", "properties": {"pad": "x" * 500}})

    per_member = 3 * BLOCK_BYTES // 560  # > 3 blocks of output per member
    members = [
        "".join(line(i) + "\r\n" for i in range(start, start + per_member))
        for start in (0, per_member)]
    members[1] += "not json\r\n"  # a rejected line keeps its text, without the CR
    path = tmp_path / "crlf.ndjson.gz"
    path.write_bytes(b"".join(gzip.compress(m.encode()) for m in members))
    assert path.stat().st_size < BLOCK_BYTES
    assert all(len(b) <= BLOCK_BYTES for b in _blocks(path))

    con = duckdb.connect()
    result = Loader(con).load([path])
    total = 2 * per_member + 1
    assert (result.lines_read, result.loaded, result.rejected) == (total, total - 1, 1)
    first, last, ids, crs = con.execute(
        "select min(line_number), max(line_number), count(distinct message_id), "
        "count(*) filter (where contains(properties::varchar, chr(13))) from raw_events"
    ).fetchall()[0]
    assert (first, last, ids, crs) == (1, total - 1, total - 1, 0)
    assert con.execute("select line_number, raw, reason from raw_rejected").fetchall() == [
        (total, "not json", "not valid JSON")]
    assert con.execute("select message_id from raw_events where line_number = ?",
                       [per_member + 1]).fetchall() == [(f"m{per_member}",)]
