"""Ingest's fast path (a clean chunk handed to DuckDB as an Arrow table over the bytes read, its
lines classified with one parse each) against its slow path (every line decoded in Python):
the same rows, reasons and counts, line by line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

import runner.ingest as ingest
import runner.ingest.files as files
from runner.ingest import Loader

BASE = {"type": "track", "event": "Order Completed", "userId": "u",
        "timestamp": "2026-03-01T00:00:00Z"}


def _messages() -> list[str]:
    """Lines where the fast path could differ: odd times, numbers, ids, properties, repeated
    keys, strictness, whitespace, no messageId (hashed text), non-ASCII text."""
    lines = []
    for i, ts in enumerate(["2026-03-01T00:00:00Z", "2026-03-01t00:00:00z", "2026-03-01",
                            "2026-03-01T00:00:00,5Z", "2026-03-01T00:00:00+02:00",
                            " 2026-03-01T00:00:00Z ", "2026-03-01T24:00:00Z", "garbage", "",
                            "2026-03-01T00:00:00.123456789Z", 5, None]):
        for key in ("timestamp", "originalTimestamp", "receivedAt", "sentAt"):
            message: dict[str, Any] = {**BASE, "messageId": f"t{i}{key}", key: ts}
            if key != "timestamp":
                message.pop("timestamp") if key != "sentAt" else None
            lines.append(json.dumps(message))
    for i, value in enumerate([0, 1, -1, 1e15, 1e16, "12", " 12 ", "abc", None, True, [1],
                               1.5e2, 12345678901234567890123, ".5", "NaN"]):
        for key in ("price", "quantity", "revenue", "total"):
            lines.append(json.dumps({**BASE, "messageId": f"n{i}{key}",
                                     "properties": {key: value}}))
            lines.append(json.dumps({**BASE, "messageId": f"p{i}{key}",
                                     "properties": {"products": [{"price": 1}, {key: value}]}}))
    for i, value in enumerate([None, "str", 5, [1], {}, {"a": None}]):
        lines.append(json.dumps({**BASE, "messageId": f"o{i}", "properties": value,
                                 "traits": value, "context": value}))
    for i, value in enumerate([None, "", " ", 5, "é"]):
        lines.append(json.dumps({**BASE, "messageId": value, "anonymousId": f"a{i}"}))
    lines += [
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
        '"userId":"v"}',
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
        '"properties":{"price":1,"price":-1,"name":"é"}}',
        '{"type":"identify","userId":"u","timestamp":"2026-03-01T00:00:00Z","traits":{"a":1,"a":2}}',
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
        '"properties":{"products":"[{\\"price\\": 1}]"}}',
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
        '"properties":{"price":NaN}}',
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",}',
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
        '"name":"a, }"}',
        '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
        '"properties":' + "[" * 600 + "]" * 600 + "}",
        '{"TYPE":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z"}',
        "[1,2]", "not json", "{", "", "   ", "\t" + json.dumps(BASE),
    ]
    return lines


def _rows(path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> tuple[Any, ...]:
    """Every row a load of `path` writes, in 16 kB chunks, with or without the fast path;
    and how many chunks took it."""
    taken = []
    clean_columns = files._clean_columns

    def spy(first: int, data: bytes, max_bytes: int) -> Any:
        columns = clean_columns(first, data, max_bytes) if fast else None
        taken.append(columns is not None)
        return columns

    monkeypatch.setattr(files, "_clean_columns", spy)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 16384)
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 1024)
    con = duckdb.connect()
    result = Loader(con).load([path])
    events = con.execute("select * exclude (loaded_at) from raw_events order by line_number"
                         ).fetchall()
    rejected = con.execute("select * exclude (loaded_at) from raw_rejected order by line_number"
                           ).fetchall()
    counts = (result.lines_read, result.loaded, result.rejected)
    return events, rejected, counts, sum(taken), len(taken)


@pytest.mark.parametrize("form", ["lf", "crlf", "gzip"])
def test_the_fast_path_loads_what_the_line_by_line_path_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """Some chunks are clean, some hold a NUL byte or invalid UTF-8 (read line by line either
    way): the rows, reasons, raw texts, content ids and counts are the same both ways."""
    lines = _messages()
    lines[40:40] = ["nul \x00 here", "\udcff not utf-8"]  # one chunk read line by line
    end = "\r\n" if form == "crlf" else "\n"
    data = "\ufeff" + end.join(lines) + end
    raw = data.encode("utf-8", errors="surrogateescape")
    path = tmp_path / ("events.ndjson.gz" if form == "gzip" else "events.ndjson")
    path.write_bytes(gzip.compress(raw) if form == "gzip" else raw)

    *fast, fast_chunks, chunks = _rows(path, monkeypatch, fast=True)
    *slow, slow_chunks, _ = _rows(path, monkeypatch, fast=False)
    assert 0 < fast_chunks < chunks and slow_chunks == 0  # both paths ran
    assert fast == slow
    events, rejected, (read, loaded, bad) = fast
    assert read == loaded + bad == len([line for line in lines if line.strip()])
    assert len(events) == loaded and len(rejected) == bad
    assert all(not text.endswith(("\r", "\n")) for _, _, _, text, _ in rejected)
    reasons = {number: reason for _, _, number, _, reason in rejected}
    assert reasons[lines.index("not json") + 1] == "not valid JSON"


def test_a_line_over_the_limit_sends_its_chunk_line_by_line() -> None:
    """`_fits` finds a line longer than the limit anywhere in a chunk (only such a chunk is
    read line by line), and lets lines exactly at the limit through."""
    assert files._fits(b"a" * 10 + b"\n" + b"b" * 10, 10)
    assert not files._fits(b"a" * 10 + b"\n" + b"b" * 11, 10)
    assert not files._fits(b"a\n" * 20 + b"b" * 11 + b"\n" + b"c", 10)
    assert files._fits(b"a\n" * 20, 10)
    assert files._clean_columns(1, b"x" * 11, 10) is None
    assert files._clean_columns(1, b"{}\n{\x00}", 10) is None
    assert files._clean_columns(1, b"{}\n\xff", 10) is None
    table = files._clean_columns(7, "{}\r\n{\"é\": 1}".encode(), 10)
    assert table.column("raw").to_pylist() == ["{}\r\n", "{\"é\": 1}"]
    assert table.column("line_number").to_pylist() == [7, 8]


# The time forms `_ts` reads: Segment's own (its quick branch) and every neighbour of it that
# must take `_iso_ts`'s way instead (lower case, comma, offset, out-of-range fields, spaces)
TIMES = [
    "2026-03-01T00:00:00Z", "2026-03-01T00:00:00.123Z", "2026-03-01T00:00:00.123456789Z",
    "2026-03-01T23:59:59.9Z", "2026-03-01T00:00:00.1234567890123Z", "2026-03-01T24:00:00Z",
    "2026-03-01T00:60:00Z", "2026-03-01T00:00:60Z", "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z", "99999-03-01T00:00:00Z",
    "2026-03-01T00:00:00.Z", "2026-03-01T00:00:00.5z", "2026-03-01t00:00:00Z",
    "2026-03-01T00:00:00,5Z", " 2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z ",
    "2026-03-01T00:00:00+02:00", "2026-03-01T00:00:00.5-0130", "2026-03-01", "2026-03-01T00:00Z",
    "2026-03-01 00:00:00Z", "", " ", "garbage", None,
]


def test_the_quick_time_branch_reads_what_iso_ts_reads() -> None:
    """`_ts` casts Segment's own form directly: for every value it gives what reading the
    value through `_iso_ts` (trimmed as `_ts` trims) gives."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute(Loader(con).check_macros)
    rows = con.execute(
        "select v, _ts(v), _iso_ts(case when ascii(v) > 32 and ascii(right(v, 1)) > 32 then v "
        "else _trim_ws(v) end) from unnest(?::varchar[]) as t(v)", [TIMES]).fetchall()
    assert len(rows) == len(TIMES)
    assert [(v, quick) for v, quick, _ in rows] == [(v, full) for v, _, full in rows]
    assert sum(quick is not None for _, quick, _ in rows) >= 10  # the forms it is for are read


def test_one_bad_line_among_clean_ones_is_the_only_one_rejected(tmp_path: Path) -> None:
    """A chunk read as one Arrow table with a few odd lines among hundreds of ordinary ones:
    exactly the bad lines are rejected, with their line numbers; the time forms beside
    Segment's own are read as before."""
    lines = [json.dumps({**BASE, "messageId": f"m{i}", "timestamp": "2026-03-01T10:00:00.123Z"})
             for i in range(300)]
    lines[149] = lines[149].replace('"userId"', '"properties": {"price": NaN}, "userId"')
    lines[150] = lines[150][:-1] + ",}"
    lines[151] = lines[151].replace("T10:00:00.123Z", "T24:00:00.123Z")
    lines[152] = lines[152].replace("T10:00:00.123Z", "t10:00:00.123z")
    lines[153] = lines[153].replace("T10:00:00.123Z", "T10:00:00.123+02:00")
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    con = duckdb.connect()
    result = Loader(con).load([path])
    assert (result.lines_read, result.loaded, result.rejected) == (300, 297, 3)
    assert con.execute("select line_number, reason from raw_rejected order by line_number"
                       ).fetchall() == [
        (150, "not valid JSON"), (151, "not valid JSON"),
        (152, "invalid event time: 2026-03-01T24:00:00.123Z")]
    times = dict(con.execute("select line_number, event_ts::varchar from raw_events "
                             "where line_number in (1, 153, 154)").fetchall())
    assert times == {1: "2026-03-01 10:00:00.123", 153: "2026-03-01 10:00:00.123",
                     154: "2026-03-01 08:00:00.123"}
