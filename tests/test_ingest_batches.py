"""Small files share a batch (runner/ingest: `Loader._load_batch`): one classification and one
transaction for many files, as a folder from Segment's S3 destination needs. Loaded in batches
or each alone, the raw tables are the same, row for row."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

import runner.ingest as ingest
from runner.ingest import Loader

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The hand fixtures, and beside them: a document (always alone) between small files; the
    ingest edges twice, one line apart; a gzip file; an empty file; a file without its last line end
    (two chunks); a file that is not UTF-8 (read line by line: alone)."""
    folder = tmp_path_factory.mktemp("batches")
    ndjson = sorted(FIXTURES.glob("*.ndjson"))
    out = [*ndjson[:5], FIXTURES / "batch_payload.json", *ndjson[5:]]
    # the lines Python reads again (repeated keys, NaN, a trailing comma...), in two files of
    # one batch, one line apart: a line's file and number tell which is which
    first = (FIXTURES / "cohort.ndjson").read_bytes().splitlines(keepends=True)[0]
    for edges in ("strict_edges", "ingest_edges"):
        shutil.copy(FIXTURES / f"{edges}.ndjson", folder / f"{edges}_a.ndjson")
        (folder / f"{edges}_b.ndjson").write_bytes(
            first + (FIXTURES / f"{edges}.ndjson").read_bytes())
        out += [folder / f"{edges}_a.ndjson", folder / f"{edges}_b.ndjson"]
    with gzip.open(folder / "cohort.ndjson.gz", "wb") as gz:
        gz.write((FIXTURES / "cohort.ndjson").read_bytes())
    (folder / "empty.ndjson").write_bytes(b"")
    last = (FIXTURES / "stitching.ndjson").read_bytes().rstrip(b"\n")
    (folder / "no_last_end.ndjson").write_bytes(last)
    (folder / "latin1.ndjson").write_bytes(
        (FIXTURES / "ties.ndjson").read_bytes() + '{"event": "caf\xe9"}\n'.encode("latin-1"))
    return out + [folder / n for n in ("cohort.ndjson.gz", "empty.ndjson", "no_last_end.ndjson",
                                       "latin1.ndjson")]


def raw_tables(files: list[Path], **loader: Any) -> tuple[dict[str, list[tuple]], Any]:
    con = duckdb.connect()
    result = Loader(con, workers=2, **loader).load(files)
    tables = {t: con.execute(f"select * exclude (loaded_at) from {t} order by all").fetchall()
              for t in ("raw_events", "raw_rejected", "raw_loads")}
    con.close()
    return tables, result


def test_batched_files_load_as_each_alone(files: list[Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    alone, alone_result = raw_tables(files, small_file_bytes=0)
    batches: list[int] = []
    load_batch = Loader._load_batch

    def counted(self: Loader, batch: list[Any], load_id: int) -> Any:
        batches.append(len(batch))
        return load_batch(self, batch, load_id)

    monkeypatch.setattr(Loader, "_load_batch", counted)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 120_000)  # a few batches, several in flight
    batched, result = raw_tables(files, small_file_bytes=60_000)

    # the document, the file that is not UTF-8 and the fixtures above 60,000 bytes load alone
    large = [f for f in files if f.stat().st_size > 60_000]
    assert len(batches) > 2 and max(batches) > 2
    assert sum(batches) == len(files) - 2 - len(large)
    assert batched == alone
    # one load per file, numbered in the files' order, each accounted for
    loads = batched["raw_loads"]
    assert [(load[0], Path(load[1]).name) for load in loads] == [
        (i, f.name) for i, f in enumerate(files, 1)]
    assert all(load[3] == load[4] + load[5] for load in loads)
    assert [f.lines_read for f in result.files] == [f.lines_read for f in alone_result.files]
    by_name = {Path(load[1]).name: load for load in loads}
    assert by_name["empty.ndjson"][3:] == (0, 0, 0)
    stitching = (FIXTURES / "stitching.ndjson").read_text().splitlines()
    assert by_name["no_last_end.ndjson"][3] == len([line for line in stitching if line.strip()])
    for edges in ("strict_edges", "ingest_edges"):  # B: one more line, loaded
        a, b = by_name[f"{edges}_a.ndjson"], by_name[f"{edges}_b.ndjson"]
        assert (b[3], b[4], b[5]) == (a[3] + 1, a[4] + 1, a[5]) and a[5] > 0


def test_a_failed_batch_is_loaded_again_file_by_file(files: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that fails (here: the one holding cohort.ndjson) rolled back whole; once the
    batches in flight settled, its files are loaded one by one: every file once, and the raw
    tables as each alone would give them (load ids aside: the retried files come last)."""
    alone, _ = raw_tables(files, small_file_bytes=0)
    load_batch = Loader._load_batch

    def failing(self: Loader, batch: list[Any], load_id: int) -> Any:
        if any(path.name == "cohort.ndjson" for path, _, _ in batch):
            raise duckdb.IOException("disk went away")
        return load_batch(self, batch, load_id)

    monkeypatch.setattr(Loader, "_load_batch", failing)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 120_000)
    batched, result = raw_tables(files, small_file_bytes=60_000)

    def by_file(tables: dict[str, list[tuple]]) -> dict[str, list[Any]]:
        """Rows keyed by file instead of load id (a load's id is its row's first column)."""
        names = {load[0]: load[1] for load in tables["raw_loads"]}
        return {t: sorted((names[row[0]], *row[1:]) for row in rows)
                for t, rows in tables.items()}

    assert sorted(f.path for f in result.files) == sorted(str(f.resolve()) for f in files)
    assert by_file(batched) == by_file(alone)
