"""The bundled sample's load kept beside it (runner/ingest/prepared.py): the same raw rows as
classifying the file, used only while it matches the file and the classification."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
from support.project import ROOT

from runner.ingest import Loader
from runner.ingest.prepared import companion

SAMPLE = ROOT / "seeds" / "sample_events.ndjson.gz"
TABLES = ("select * exclude (loaded_at) from raw_events order by line_number",
          "select * exclude (loaded_at) from raw_rejected order by line_number",
          "select * exclude (loaded_at) from raw_loads")


def _load(path: Path, use_prepared: bool) -> tuple[bool, list[list[tuple]]]:
    con = duckdb.connect()
    try:
        result = Loader(con, use_prepared=use_prepared).load([path])
        assert result.lines_read == result.loaded + result.rejected
        return result.files[0].prepared, [con.execute(q).fetchall() for q in TABLES]
    finally:
        con.close()


def test_the_shipped_copy_is_used_and_loads_what_classifying_loads() -> None:
    """Fails when runner/ingest/ changed and the copy was not written again:
    python -m runner.ingest seeds/sample_events.ndjson.gz"""
    used, copied = _load(SAMPLE, use_prepared=True)
    assert used, "seeds' copy is stale: python -m runner.ingest " + str(SAMPLE)
    classified_used, classified = _load(SAMPLE, use_prepared=False)
    assert not classified_used
    assert [len(rows) for rows in copied] == [100_000, 10, 1]
    assert copied == classified


def test_a_copy_that_does_not_match_its_file_is_not_used(tmp_path: Path) -> None:
    """A changed file (one more message) is classified, its new line with it; a copy that is
    not Parquet is passed over as well."""
    changed = tmp_path / SAMPLE.name
    shutil.copy(SAMPLE, changed)
    shutil.copy(companion(SAMPLE), companion(changed))
    with changed.open("ab") as out:  # a gzip file may have several members
        out.write(gzip.compress(b'{"type": "track", "event": "Product Viewed", '
                                b'"messageId": "extra-1", "userId": "u-extra", '
                                b'"timestamp": "2026-04-01T00:00:00Z"}\n'))
    used, tables = _load(changed, use_prepared=True)
    assert not used
    assert len(tables[0]) == 100_001 and tables[2][0][-3:] == (100_011, 100_001, 10)
    companion(changed).write_bytes(b"not parquet")
    used, again = _load(changed, use_prepared=True)
    assert not used and again[0] == tables[0]
