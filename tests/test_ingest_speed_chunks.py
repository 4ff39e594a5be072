"""Ingest cuts a file into chunks copying each byte once (`_whole_lines`): wherever the chunk and
block boundaries fall (a bad line among good ones, blank and whitespace-only lines, repeated
keys, a line over the message limit, CRLF, no final line end, gzip), the rows, reasons and
counts are those of the file read as one chunk."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest

import runner.ingest as ingest
from runner.ingest import Loader
from runner.ingest.files import _whole_lines

BASE = {"type": "track", "event": "Order Completed", "userId": "u",
        "timestamp": "2026-03-01T00:00:00Z"}


def _lines() -> list[str]:
    lines = [json.dumps({**BASE, "messageId": f"m{i}", "properties": {"price": i}})
             for i in range(60)]
    lines[5] = "not json"
    lines[9] = ""
    lines[10] = "   \t"
    lines[17] = ('{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
                 '"userId":"v"}')
    lines[18] = ('{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
                 '"properties":{"price":1,"price":-1}}')
    lines[23] = ('{"type":"identify","userId":"u","timestamp":"2026-03-01T00:00:00Z",'
                 '"traits":{"a":1,"a":2}}')
    lines[31] = json.dumps({**BASE, "messageId": "long", "pad": "x" * 3000})  # over the limit
    lines[40] = '{"type":"track","event":"E","userId":"u","timestamp":"2026-03-01T00:00:00Z",}'
    lines[41] = "{" + " " * 2500  # a long line that ends within the limit's reach
    return lines


def _load(path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, block: int) -> tuple[Any, ...]:
    monkeypatch.setattr(ingest, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(ingest, "BLOCK_BYTES", block)
    con = duckdb.connect()
    result = Loader(con, max_message_bytes=2048).load([path])
    events = con.execute("select * exclude (loaded_at, load_id) from raw_events "
                         "order by line_number").fetchall()
    rejected = con.execute("select * exclude (loaded_at, load_id) from raw_rejected "
                           "order by line_number").fetchall()
    return events, rejected, (result.lines_read, result.loaded, result.rejected)


@pytest.mark.parametrize("form", ["lf", "crlf", "gzip", "no-final-end"])
def test_chunk_boundaries_do_not_change_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    lines = _lines()
    end = "\r\n" if form == "crlf" else "\n"
    text = end.join(lines) + ("" if form == "no-final-end" else end)
    raw = text.encode()
    path = tmp_path / ("events.ndjson.gz" if form == "gzip" else "events.ndjson")
    path.write_bytes(gzip.compress(raw) if form == "gzip" else raw)

    whole = _load(path, monkeypatch, 1 << 24, 1 << 20)
    events, rejected, (read, loaded, bad) = whole
    assert read == loaded + bad == len([line for line in lines if line.strip()])
    reasons = {row[1]: row[-1] for row in rejected}  # (source_file, line_number, raw, reason)
    assert reasons[6] == "not valid JSON" and reasons[32].startswith("message larger than")
    assert reasons[41] == "not valid JSON"
    assert 10 not in reasons and 11 not in reasons  # blank lines: neither loaded nor rejected
    loaded = {row[1]: row for row in events}  # (source_file, line_number, ...)
    assert loaded[18][6] == "v"  # user_id: a repeated key's last value
    assert reasons[19] == "properties.price is negative"  # the last price
    assert json.loads(loaded[24][13]) == {"a": 2}  # traits
    for chunk, block in [(1000, 7), (2049, 2049), (4096, 333)]:
        assert _load(path, monkeypatch, chunk, block) == whole, (chunk, block)


def test_whole_lines_cuts_as_joining_then_cutting_did() -> None:
    rng = random.Random(20)
    for _ in range(2000):
        rest = bytes(rng.choice(b"ab") for _ in range(rng.randrange(4)))
        pieces = [bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(6)))
                  for _ in range(rng.randrange(5))]
        data = rest + b"".join(pieces)
        cut = data.rfind(b"\n")
        expected = (data[:cut], data[cut + 1:]) if cut >= 0 else (None, data)
        assert _whole_lines(rest, pieces) == expected
