"""`arpu ingest`: Segment messages from files into `raw_events`, bad lines into `raw_rejected`.

The Loader streams each file in chunks of whole lines (runner/ingest/files.py) and classifies
them on as many DuckDB cursors as there are cores, a transaction per chunk: DuckDB parses,
validates and types the lines in bulk (runner/ingest/classify.py). Small files (a folder from
Segment's S3 destination) are classified many at once, in batches of whole files: each batch one
chunk and one transaction, its files loaded whole or not at all. Python reads a line itself
only where DuckDB would read it otherwise than a JSON reader (runner/ingest/strict.py): a line
that may break RFC 8259 (NaN, a trailing comma), repeats a key (DuckDB takes the first value, SPEC
the last), carries `products` as a string holding an array, or may nest deeper than MAX_DEPTH.
Accounting holds for every file: `lines read = loaded + rejected` (blank lines are skipped and
not counted).

Whatever ingest accepts, every engine stores and every build reads: a line larger than the
message limit is read no further than the limit (memory stays bounded whatever the input), JSON
nests at most MAX_DEPTH levels, no string holds a NUL (PostgreSQL's text cannot), and money
fields stay within +-max_number, so that sums cannot overflow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

import duckdb

from runner.config import MAX_MESSAGE_BYTES, MAX_PRODUCTS
from runner.engines.base import RAW_TABLES_DDL
from runner.errors import IngestError
from runner.faults import fault_point
from runner.ingest import prepared
from runner.ingest.classify import (
    CHUNK_SOURCE,
    LINES_SOURCE,
    MAX_NUMBER,
    RECHECK_SOURCE,
    _check_macros,
    _classify_sql,
)
from runner.ingest.files import (
    BLOCK_BYTES,
    CHUNK_BYTES,
    EVENT_SUFFIXES,
    SMALL_FILE_BYTES,
    Chunk,
    _blocks,
    _document_chunk,
    _joined,
    _ndjson_chunks,
    _regular,
    _small_file_chunks,
    _sniff_document,
    expand_paths,
)
from runner.ingest.strict import DEPTH_REASON, _canonical, _strict_problem, _too_deep

CHECKPOINT_BYTES = "128MB"

__all__ = [
    "BLOCK_BYTES", "CHUNK_BYTES", "EVENT_SUFFIXES", "MAX_MESSAGE_BYTES", "MAX_NUMBER",
    "MAX_PRODUCTS", "FileResult", "IngestResult", "Loader", "_blocks",
    "expand_paths",
]



@dataclass
class FileResult:
    path: str
    bytes: int = 0
    lines_read: int = 0
    loaded: int = 0
    rejected: int = 0
    prepared: bool = False  # loaded from its copy beside it (runner/ingest/prepared.py)


@dataclass
class IngestResult:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines_read(self) -> int:
        return sum(f.lines_read for f in self.files)

    @property
    def loaded(self) -> int:
        return sum(f.loaded for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def _read_ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Produce items on a thread while the consumer works: file reading and line splitting
    overlap with DuckDB's parsing (which releases the GIL)."""
    queue: Queue[Any] = Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                queue.put(item)
            queue.put(done)
        except BaseException as exc:  # surfaced in the consumer
            queue.put(exc)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = queue.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class _Batches:
    """Batches of small files loaded on the Loader's cursors at once, settled (their files
    counted, reported and past their fault point) in the order they were submitted; their load
    ids follow one another from the first batch's, taken after what came before settled. A
    batch that fails rolled back: once the others settled, its files are loaded one by one,
    so that the one that fails again is named (the others are loaded)."""

    def __init__(self, loader: Loader, pool: ThreadPoolExecutor,
                 progress: Callable[[int], None] | None, result: IngestResult) -> None:
        self.loader, self.pool, self.progress, self.result = loader, pool, progress, result
        self.in_flight: deque[tuple[Future[list[FileResult]], list[Path]]] = deque()
        self.next_id: int | None = None
        self.failed: list[Path] = []

    def submit(self, batch: list[tuple[Path, int, list[Chunk]]]) -> None:
        if not batch:
            return
        if self.next_id is None:
            self.next_id = self.loader._next_load_id()
        future = self.pool.submit(self.loader._load_batch, batch, self.next_id)
        self.in_flight.append((future, [path for path, _, _ in batch]))
        self.next_id += len(batch)
        while len(self.in_flight) >= self.loader.workers:  # memory stays flat
            self._settle_oldest()

    def settle(self) -> None:
        """Wait for every batch in flight, then load a failed batch's files one by one; the
        next batch's ids are read afresh."""
        while self.in_flight:
            self._settle_oldest()
        self.next_id = None
        failed, self.failed = self.failed, []
        for path in failed:
            self.result.files.append(self.loader._load_file(path, self.progress))
            fault_point("ingest:file")

    def _settle_oldest(self) -> None:
        future, paths = self.in_flight.popleft()
        try:
            files = future.result()
        except Exception:
            self.failed += paths
            return
        for res in files:
            self.result.files.append(res)
            if self.progress:
                self.progress(res.bytes)
            fault_point("ingest:file")


class Loader:
    """Loads files into one DuckDB connection's raw tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection, load_id_offset: int = 0,
                 workers: int | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_products: int = MAX_PRODUCTS, max_number: float = MAX_NUMBER,
                 use_prepared: bool = True, small_file_bytes: int = SMALL_FILE_BYTES) -> None:
        """Limits: a message of more than `max_message_bytes` (read no further), an order of
        more than `max_products` products, a price, quantity, revenue or total (in properties
        or a product) above `max_number` are rejected. `use_prepared`: a file with a copy of
        its load beside it that is still valid loads from that (runner/ingest/prepared.py).
        A message file of at most `small_file_bytes` shares a batch with the small files next to
        it (0: every file is loaded alone)."""
        if max_message_bytes < 1 or max_products < 0:
            raise ValueError("max_message_bytes must be positive and max_products not negative")
        if not 0 < max_number < float("inf"):
            raise ValueError("max_number must be positive and finite")
        self.con = con
        self.load_id_offset = load_id_offset
        self.workers = workers or min(os.cpu_count() or 1, 4)
        self.max_message_bytes = max_message_bytes
        self.check_macros = _check_macros(max_number)
        self.classify_sql = _classify_sql("_parsed", CHUNK_SOURCE, max_products, max_number)
        self.recheck_sql = _classify_sql("_reparsed", RECHECK_SOURCE, max_products, max_number)
        self.lines_classify_sql = _classify_sql("_parsed", LINES_SOURCE, max_products,
                                                max_number)
        self.use_prepared = use_prepared
        self.small_file_bytes = small_file_bytes
        # what a file's rows depend on besides its bytes and this package's sources
        self.definition = "\n".join([self.check_macros, self.classify_sql, self.recheck_sql,
                                     self.lines_classify_sql, str(max_message_bytes)])
        con.execute("set TimeZone = 'UTC'")
        con.execute(RAW_TABLES_DDL)

    def load(
        self, paths: list[Path], progress: Callable[[int], None] | None = None
    ) -> IngestResult:
        started = time.perf_counter()
        result = IngestResult()
        # a commit per chunk, a checkpoint per CHECKPOINT_BYTES of them: committed rows stay in
        # memory until a checkpoint writes them (1GB held a 1 GB file's rows: 1.1 GB of RSS,
        # 128MB 0.55 GB, for the same CPU time). The setting is the database's, so a build that
        # ingests first gets its own back
        threshold = self.con.execute("select current_setting('checkpoint_threshold')").fetchall()
        self.con.execute(f"set checkpoint_threshold = '{CHECKPOINT_BYTES}'")
        # the cursors chunks are classified on, each with the check macros: made once a load
        # (a cursor and its macros cost ~10 ms, as much as a small file's lines)
        self._cursors: Queue[duckdb.DuckDBPyConnection] = Queue()
        try:
            for _ in range(self.workers):
                cursor = self.con.cursor()
                self._cursors.put(cursor)
                cursor.execute("set TimeZone = 'UTC'")
                cursor.execute(self.check_macros)
            self._load(paths, progress, result)
        finally:
            while not self._cursors.empty():
                self._cursors.get().close()
            self.con.execute(f"set checkpoint_threshold = '{threshold[0][0]}'")
        result.seconds = time.perf_counter() - started
        return result

    def _load(self, paths: list[Path], progress: Callable[[int], None] | None,
              result: IngestResult) -> None:
        # the rows of a load that never finished are removed by the caller first
        # (Context.discard_unfinished_loads); its file is loaded again whole. Small files wait
        # in a batch, loaded together (one classification, one transaction) when it is full or
        # a file that is not small comes; every file is committed in its order
        batch: list[tuple[Path, int, list[Chunk]]] = []
        held = 0  # bytes of the batch's lines
        with ThreadPoolExecutor(self.workers, thread_name_prefix="arpu-ingest") as pool:
            batches = _Batches(self, pool, progress, result)
            for path in paths:
                small = self._small(path)
                size = 0 if small is None else sum(chunk.columns.nbytes for chunk in small[2])
                if small is None or held + size > CHUNK_BYTES:
                    batches.submit(batch)
                    batch, held = [], 0
                if small is None:
                    batches.settle()  # every file before this one is committed
                    result.files.append(self._load_file(path, progress))
                    fault_point("ingest:file")
                else:
                    batch.append(small)
                    held += size
            batches.submit(batch)
            batches.settle()

    def _small(self, path: Path) -> tuple[Path, int, list[Chunk]] | None:
        """A small message file's (path, size, chunks) when it can share a batch; None for
        any other (read, and reported if it cannot be, by `_load_file`)."""
        path = path.resolve()
        try:
            size = _regular(path, str(path)).st_size
            if (size > self.small_file_bytes or _sniff_document(path) is not None
                    or (self.use_prepared and prepared.companion(path).exists())):
                return None
            chunks = _small_file_chunks(path, self.max_message_bytes, CHUNK_BYTES)
        except (OSError, IngestError):
            return None
        return None if chunks is None else (path, size, chunks)

    def _load_batch(self, batch: list[tuple[Path, int, list[Chunk]]], load_id: int
                    ) -> list[FileResult]:
        """Small files classified as one chunk, their rows and their loads (numbered from
        `load_id` on) committed in one transaction: each file loaded whole, or none of them."""
        loaded_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        files = [FileResult(str(path), bytes=size) for path, size, _ in batch]
        chunk = _joined([chunks for _, _, chunks in batch])
        cursor = self._cursors.get()
        try:
            cursor.execute("begin transaction")
            try:
                counts = {} if chunk is None else self._load_chunk(
                    cursor, chunk, [f.path for f in files], load_id, loaded_at)
                for i, res in enumerate(files):
                    res.lines_read, res.rejected = counts.get(i, (0, 0))
                    res.loaded = res.lines_read - res.rejected
                cursor.execute(
                    "insert into raw_loads select unnest(?::bigint[]), ?, unnest(?::varchar[]), "
                    "unnest(?::bigint[]), unnest(?::bigint[]), unnest(?::bigint[]), "
                    "unnest(?::bigint[])",
                    [list(range(load_id, load_id + len(files))), loaded_at,
                     *([getattr(f, name) for f in files]
                       for name in ("path", "bytes", "lines_read", "loaded", "rejected"))])
                cursor.execute("commit")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("rollback")
                raise
        finally:
            self._cursors.put(cursor)
        return files

    def _next_load_id(self) -> int:
        return int(self.con.execute("select coalesce(max(load_id), 0) + 1 from raw_loads")
                   .fetchall()[0][0]) + self.load_id_offset

    def _load_file(self, path: Path, progress: Callable[[int], None] | None) -> FileResult:
        path = path.resolve()  # source_file: one spelling per file
        try:
            size = _regular(path, str(path)).st_size
            records = _sniff_document(path)
        except OSError as exc:
            raise IngestError(f"cannot read: {exc.strerror}", location=str(path)) from None
        load_id = self._next_load_id()
        loaded_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        res = FileResult(str(path), bytes=size)
        if self.use_prepared and self._prepared_is_valid(path):
            self._load_prepared(path, load_id, loaded_at, res)
            if progress:
                progress(size)
            return res

        chunks: Any
        if records is not None:
            chunks = [_document_chunk(records, size, self.max_message_bytes)]
        else:  # the sizes are read here, where a test may shrink them
            chunks = _read_ahead(_ndjson_chunks(path, self.max_message_bytes, CHUNK_BYTES,
                                                BLOCK_BYTES))
        # One transaction per chunk keeps memory flat on any file size; the load counts once
        # its raw_loads row is written, and `load` removes the rows of a load that did not.
        # Chunks are classified on several cursors at once: a chunk is one row group, which
        # DuckDB runs on one thread, so this is what keeps every core busy.
        cursors = self._cursors

        def classify(chunk: Chunk) -> tuple[int, int]:
            cursor = cursors.get()
            try:
                cursor.execute("begin transaction")
                try:
                    counts = self._load_chunk(cursor, chunk, [str(path)], load_id,
                                              loaded_at).get(0, (0, 0))
                    cursor.execute("commit")
                except BaseException:
                    with contextlib.suppress(duckdb.Error):
                        cursor.execute("rollback")
                    raise
                return counts
            finally:
                cursors.put(cursor)

        in_flight: deque[tuple[Future[tuple[int, int]], int]] = deque()

        def settle_oldest() -> None:
            """Wait for the oldest chunk in flight; count its lines, report its bytes."""
            future, done = in_flight.popleft()
            read, bad = future.result()
            res.lines_read += read
            res.rejected += bad
            res.loaded += read - bad
            if progress:
                progress(done)
            fault_point("ingest:chunk")  # a chunk is committed, the load not yet recorded

        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="arpu-ingest") as pool:
                try:
                    reported = 0  # bytes of the file handed to progress
                    for chunk in chunks:
                        if not chunk.count:
                            continue
                        read = chunk.read
                        done, reported = read - reported, read
                        in_flight.append((pool.submit(classify, chunk), done))
                        while len(in_flight) >= self.workers:  # memory stays flat
                            settle_oldest()
                    while in_flight:
                        settle_oldest()
                    if progress and reported < size:  # blank lines at the end
                        progress(size - reported)
                finally:
                    for future, _ in in_flight:  # a failure: let the others finish first
                        future.cancel()
            self.con.execute(
                "insert into raw_loads values (?, ?, ?, ?, ?, ?, ?)",
                [load_id, loaded_at, str(path), size, res.lines_read, res.loaded, res.rejected],
            )
        except BaseException:
            for table in ("raw_events", "raw_rejected"):  # the load did not happen
                self.con.execute(f"delete from {table} where load_id = ?", [load_id])
            raise
        return res

    def _prepared_is_valid(self, path: Path) -> bool:
        stored = prepared.stored_fingerprint(self.con, path)
        return stored is not None and stored == prepared.fingerprint(path, self.definition)

    def _load_prepared(self, path: Path, load_id: int, loaded_at: dt.datetime,
                       res: FileResult) -> None:
        """The file's rows from its copy, and its load recorded, in one transaction."""
        self.con.execute("begin transaction")
        try:
            read, bad = prepared.load(self.con, path, load_id, loaded_at)
            self.con.execute("insert into raw_loads values (?, ?, ?, ?, ?, ?, ?)",
                             [load_id, loaded_at, str(path), res.bytes, read, read - bad, bad])
            self.con.execute("commit")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self.con.execute("rollback")
            raise
        res.lines_read, res.loaded, res.rejected, res.prepared = read, read - bad, bad, True

    def _load_chunk(
        self, con: duckdb.DuckDBPyConnection, chunk: Chunk, source_files: list[str],
        load_id: int, loaded_at: dt.datetime
    ) -> dict[int, tuple[int, int]]:
        """Classify one chunk into raw_events and raw_rejected: (lines read, rejected) by
        `file_index`. The chunk's lines are from `source_files` (by file_index), whose loads
        are numbered from `load_id` on."""
        con.register("_chunk", chunk.columns)
        try:
            con.execute(self.lines_classify_sql if chunk.clean else self.classify_sql)
        finally:
            con.unregister("_chunk")
        for file_index, record_number, raw in con.execute(
                "select file_index, record_number, raw from _parsed where deep").fetchall():
            if _too_deep(raw):  # rejected as it is: read again by nobody
                con.execute("update _parsed set reason = ?, recheck = false, suspicious = false "
                            "where file_index = ? and record_number = ?",
                            [DEPTH_REASON, file_index, record_number])
        self._recheck(con)
        suspicious = con.execute(
            "select file_index, record_number, raw from _parsed where suspicious and not recheck"
        ).fetchall()
        for file_index, record_number, raw in suspicious:
            problem = _strict_problem(raw)
            if problem:
                con.execute("update _parsed set reason = ? "
                            "where file_index = ? and record_number = ?",
                            [problem, file_index, record_number])
        con.execute(
            """insert into raw_events select ? + file_index, ?, (?::varchar[])[file_index + 1],
                   line_number, record_number, message_id,
                   coalesce(message_type, case when event is not null then 'track' end), event,
                   user_id, anonymous_id, event_ts, received_at, sent_at, original_ts,
                   properties, traits, context, content_id
               from _parsed where reason is null""",
            [load_id, loaded_at, source_files],
        )
        con.execute(
            "insert into raw_rejected select ? + file_index, ?, (?::varchar[])[file_index + 1], "
            "line_number, _line_text(raw), reason from _parsed where reason is not null",
            [load_id, loaded_at, source_files],
        )
        counts = con.execute("select file_index, count(*), count(reason) from _parsed "
                             "group by file_index").fetchall()
        con.execute("drop table _parsed")
        return {int(i): (int(read), int(bad)) for i, read, bad in counts}

    def _recheck(self, con: duckdb.DuckDBPyConnection) -> None:
        """Classify again, from the text `_canonical` gives, the lines the first pass marked
        (a repeated key, a `products` string); each keeps its raw text and content_id."""
        import numpy as np

        marked = con.execute("select file_index, line_number, record_number, raw from _parsed "
                             "where recheck").fetchall()
        if not marked:
            return
        canonical = [_canonical(m[3]) for m in marked]
        con.register("_recheck", {
            "file_index": np.array([m[0] for m in marked], dtype=np.int32),
            "line_number": np.array([m[1] for m in marked], dtype=np.int64),
            "record_number": np.array([m[2] for m in marked], dtype=np.int64),
            "raw": np.array([m[3] for m in marked], dtype=object),
            "forced_reason": np.array([c[1] for c in canonical], dtype=object),
            "canonical": np.array([c[0] for c in canonical], dtype=object),
        })
        try:
            con.execute(self.recheck_sql)
        finally:
            con.unregister("_recheck")
        con.execute("delete from _parsed using _reparsed where _parsed.file_index = "
                    "_reparsed.file_index and _parsed.record_number = _reparsed.record_number")
        # strictness was checked by `_canonical`: not suspicious again
        con.execute("insert into _parsed select * replace (true as recheck) from _reparsed")
        con.execute("drop table _reparsed")
