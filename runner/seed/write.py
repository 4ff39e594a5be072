"""Writing the sample: DuckDB builds ``final`` and copies its messages to the file, the bad lines
come last, and a ``.gz`` file is compressed in parallel into members of a fixed size."""

from __future__ import annotations

import os
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runner.seed.catalogue import BAD_LINES_PER_EVENT
from runner.seed.messages import bad_lines, json_sql
from runner.seed.tables import build, count

_GZIP_CHUNK = 64 << 20  # bytes per gzip member (fixed: the output must not depend on threads)


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
    return 9 if size <= 128 << 20 else 6 if size <= 512 << 20 else 1


def _gzip_member(data: bytes, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0: reproducible
    return comp.compress(data) + comp.flush()


def _compress_file(src: Path, dst: Path) -> None:
    """Gzip ``src`` into ``dst`` as members of a fixed size compressed in parallel.

    zlib releases the GIL, so threads use every core; the bytes depend only on the chunk size
    and the level, never on the number of workers.
    """
    level = _gzip_level(src.stat().st_size)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, src.open("rb") as fh, dst.open("wb") as out:
        pending: deque[Future[bytes]] = deque()
        while block := fh.read(_GZIP_CHUNK):
            pending.append(pool.submit(_gzip_member, block, level))
            if len(pending) > workers:
                out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())


def _generate(out: Path, events: int, seed: int, threads: int | None = None) -> SeedStats:
    """`generate`, on a given number of DuckDB threads (the bytes do not depend on it)."""
    import duckdb

    if events < 0:
        raise ValueError(f"events must be >= 0, got {events}")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gz = out.name.endswith(".gz")
    plain = out.with_name(out.name + ".tmp") if gz else out
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")  # COPY writes in table order
        con.execute("SET enable_progress_bar = false")
        n_dups = build(con, events, seed)
        n_events = count(con, "SELECT count(*) FROM final")
        target = str(plain).replace("'", "''")
        con.execute(
            f"COPY ({json_sql()}) TO '{target}' "
            "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', COMPRESSION none)"
        )
    finally:
        con.close()
    bad = bad_lines(0 if events == 0 else max(5, round(events * BAD_LINES_PER_EVENT)), seed)
    bad_bytes = "".join(line + "\n" for line in bad).encode()
    try:
        if gz:
            _compress_file(plain, out)
            if bad_bytes:  # a second gzip member: gzip readers concatenate members
                with out.open("ab") as fh:
                    fh.write(_gzip_member(bad_bytes, 9))
        elif bad_bytes:
            with out.open("ab") as fh:
                fh.write(bad_bytes)
    finally:
        if gz:
            plain.unlink(missing_ok=True)
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
