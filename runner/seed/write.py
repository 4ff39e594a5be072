"""Writing the sample: DuckDB builds ``final`` and copies its messages to the file, the bad lines
come last, and a ``.gz`` file is compressed in parallel into members of a fixed size, a slice of
messages at a time."""

from __future__ import annotations

import os
import shutil
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from runner.seed.catalogue import BAD_LINES_PER_EVENT
from runner.seed.messages import bad_lines, json_sql
from runner.seed.tables import build, count

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

_GZIP_CHUNK = 64 << 20  # bytes per gzip member (fixed: the output must not depend on threads)
_LEVEL_6_MAX = 512 << 20  # plain bytes up to which gzip level 6 is used, level 1 above
_ROWS_PER_SLICE = 1 << 20  # rows of ``final`` written at a time to a .gz (about 480 MB)


@dataclass(frozen=True)
class SeedStats:
    events: int  # messages written (valid JSON objects, duplicates included)
    lines: int  # physical non-blank lines in the file (events + bad lines)
    bad_lines: int
    duplicates: int  # extra copies of an existing messageId
    bytes: int
    seconds: float


def _gzip_level(size: int) -> int:
    """Small files (the committed sample) are compressed hard, big ones fast."""
    return 9 if size <= 128 << 20 else 6 if size <= _LEVEL_6_MAX else 1


def _gzip_member(data: bytes, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0: reproducible
    return comp.compress(data) + comp.flush()


class _GzipMembers:
    """Plain bytes in, gzip members of ``_GZIP_CHUNK`` plain bytes each out, in order.

    zlib releases the GIL, so threads use every core; the bytes depend only on the chunk size
    and the level, never on the number of workers or on how the plain bytes were handed in.
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        self.out, self.level = out, level
        self.workers = max(1, min(4, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(self.workers)
        self.pending: deque[Future[bytes]] = deque()
        self.held: list[bytes] = []  # the next member's first bytes, fewer than a chunk
        self.held_size = 0

    def _submit(self, chunk: bytes) -> None:
        self.pending.append(self.pool.submit(_gzip_member, chunk, self.level))
        if len(self.pending) > self.workers:
            self.out.write(self.pending.popleft().result())

    def write_file(self, src: Path) -> None:
        """Read what completes the held chunk, never more: a whole chunk is read into one
        ``bytes`` and compressed without another copy."""
        with src.open("rb") as fh:
            while block := fh.read(_GZIP_CHUNK - self.held_size):
                self.held.append(block)
                self.held_size += len(block)
                if self.held_size == _GZIP_CHUNK:
                    self._submit_held()

    def _submit_held(self) -> None:
        self._submit(self.held[0] if len(self.held) == 1 else b"".join(self.held))
        self.held, self.held_size = [], 0

    def close(self) -> None:
        if self.held:
            self._submit_held()
        while self.pending:
            self.out.write(self.pending.popleft().result())
        self.pool.shutdown()


def _append(src: Path, dst: BinaryIO) -> None:
    with src.open("rb") as fh:
        shutil.copyfileobj(fh, dst, _GZIP_CHUNK)


def _copy_json(con: DuckDBPyConnection, target: Path, rows: str = "final") -> None:
    """DuckDB writes one JSON text per row of ``rows``, in table order, to ``target``."""
    path = str(target).replace("'", "''")
    con.execute(f"COPY ({json_sql(rows)}) TO '{path}' "
                "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', "
                "COMPRESSION none)")


def _copy_json_gzip(con: DuckDBPyConnection, out: Path, n_rows: int) -> None:
    """``final``'s messages gzip-compressed, never more than about 1 GB of them uncompressed on
    disk at a time (100M events are some 46 GB of NDJSON).

    They are written a slice of rows at a time; up to ``_LEVEL_6_MAX`` bytes are kept aside,
    which decides the level as if the whole file had been written first, then every slice is
    compressed as it comes: the same bytes as compressing the whole file at once.
    """
    spool, part = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".part")
    slices = iter(range(0, n_rows, _ROWS_PER_SLICE))

    def write_slice(start: int) -> None:
        _copy_json(con, part, f"(SELECT * FROM final WHERE rowid >= {start} "
                              f"AND rowid < {start + _ROWS_PER_SLICE})")

    try:
        with spool.open("wb") as fh:
            for start in slices:
                write_slice(start)
                _append(part, fh)
                if fh.tell() > _LEVEL_6_MAX:
                    break
        with out.open("wb") as fh:
            members = _GzipMembers(fh, _gzip_level(spool.stat().st_size))
            members.write_file(spool)
            spool.unlink()
            for start in slices:  # what the spool did not hold: compressed slice by slice
                write_slice(start)
                members.write_file(part)
            members.close()
    finally:
        spool.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


def _generate(out: Path, events: int, seed: int, threads: int | None = None) -> SeedStats:
    """`generate`, on a given number of DuckDB threads (the bytes do not depend on it)."""
    import duckdb

    if events < 0:
        raise ValueError(f"events must be >= 0, got {events}")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gz = out.name.endswith(".gz")
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")  # COPY writes in table order
        con.execute("SET enable_progress_bar = false")
        n_dups = build(con, events, seed)
        n_events = count(con, "SELECT count(*) FROM final")
        if gz:
            _copy_json_gzip(con, out, n_events)
        else:
            _copy_json(con, out)
    finally:
        con.close()
    bad = bad_lines(0 if events == 0 else max(5, round(events * BAD_LINES_PER_EVENT)), seed)
    bad_bytes = "".join(line + "\n" for line in bad).encode()
    if bad_bytes:  # gzip: a member of its own (gzip readers concatenate members)
        with out.open("ab") as fh:
            fh.write(_gzip_member(bad_bytes, 9) if gz else bad_bytes)
    return SeedStats(
        events=n_events,
        lines=n_events + len(bad),
        bad_lines=len(bad),
        duplicates=n_dups,
        bytes=out.stat().st_size,
        seconds=round(time.perf_counter() - started, 3),
    )


def generate(out: Path, events: int = 100_000, seed: int = 42) -> SeedStats:
    """Write ``events`` Segment messages (plus a few bad lines) to ``out`` (gzip if ``.gz``).

    ``events`` counts the valid messages, duplicates included; the bad lines come on top.
    """
    return _generate(out, events, seed)
