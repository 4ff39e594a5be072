"""A message file's load kept beside it (`<file>.arpu-raw.parquet`): its rows as ingest
classifies them, so that a fresh project's first build loads the bundled sample without
classifying its 100,010 lines again (1 s of a 4 s first build on 2 cores).

The copy is used only while its fingerprint matches: the file's bytes, the classification
(runner/ingest's sources and SQL, the limits) and DuckDB's version; otherwise the file is
ingested as any other. Write it again after a change to runner/ingest/ with

    python -m runner.ingest seeds/sample_events.ndjson.gz
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

SUFFIX = ".arpu-raw.parquet"
KEY = "arpu_fingerprint"
# raw_events' columns after load_id, loaded_at and source_file (which a load sets), then
# raw_rejected's own: a row with a reason is a rejected line
EVENT_COLUMNS = ("line_number, record_number, message_id, message_type, event, user_id, "
                 "anonymous_id, event_ts, received_at, sent_at, original_ts, properties, "
                 "traits, context, content_id")


def companion(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def fingerprint(path: Path, definition: str) -> str:
    """What the rows of `path` depend on; `definition`: the Loader's SQL and limits."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:  # in blocks: a file may be larger than memory
        while block := fh.read(1 << 20):
            digest.update(block)
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    digest.update(definition.encode())
    digest.update(duckdb.__version__.encode())
    return digest.hexdigest()


def stored_fingerprint(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    """The fingerprint the copy of `path` was written with; None without a readable copy."""
    copy = companion(path)
    if not copy.is_file():
        return None
    try:
        rows = con.execute("select value from parquet_kv_metadata(?) where decode(key) = ?",
                           [str(copy), KEY]).fetchall()
    except duckdb.Error:  # not Parquet, or unreadable: ingest the file instead
        return None
    return bytes(rows[0][0]).decode() if rows else None


def load(con: duckdb.DuckDBPyConnection, path: Path, load_id: int, loaded_at: object
         ) -> tuple[int, int]:
    """Insert the copy's rows as load `load_id` of `path`, in the caller's transaction:
    (lines read, rejected)."""
    params = [load_id, loaded_at, str(path), str(companion(path))]
    loaded = con.execute(f"insert into raw_events select ?, ?, ?, {EVENT_COLUMNS} "
                         "from read_parquet(?) where reason is null", params).fetchall()[0][0]
    bad = con.execute("insert into raw_rejected select ?, ?, ?, line_number, raw, reason "
                      "from read_parquet(?) where reason is not null", params).fetchall()[0][0]
    return int(loaded) + int(bad), int(bad)


def export(con: duckdb.DuckDBPyConnection, path: Path, definition: str) -> Path:
    """Write the copy of `path` from the raw tables of `con`, which hold its load alone."""
    copy = companion(path)
    target = "'" + str(copy).replace("'", "''") + "'"  # COPY TO takes no parameter
    con.execute(
        f"copy (select {EVENT_COLUMNS}, null::varchar as raw, null::varchar as reason "
        "from raw_events union all by name select line_number, raw, reason from "
        f"raw_rejected order by line_number) to {target} (format parquet, "
        f"compression zstd, kv_metadata {{{KEY}: '{fingerprint(path, definition)}'}})")
    return copy
