"""Reading message files: paths and globs to files, bytes (gunzipped as a stream), chunks of whole
lines, and whole-document JSON (an array, a batch payload). A clean chunk, every line UTF-8
without NUL and within the message limit, goes to DuckDB as an Arrow table over the bytes read
(nothing split or copied in Python); any other chunk is read line by line, each odd line with the
reason it is rejected. No line is held past the message limit, whatever the input."""

from __future__ import annotations

import glob
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import MAX_MESSAGE_BYTES
from runner.errors import IngestError
from runner.ingest.strict import _strict_problem

# DuckDB binds and plans a chunk's classification in ~20 ms whatever its size: at 8 MB that was
# a fifth of the chunk's CPU time, at 16 MB a tenth (1 GB: 10% less CPU); larger chunks leave a
# core idle on files of a few chunks
CHUNK_BYTES = 16 << 20
BLOCK_BYTES = 1 << 20  # read and gunzip in blocks of this size
# A message file this small (on disk) shares a chunk, a classification and a transaction with
# the small files beside it: classifying a chunk costs ~20 ms besides its lines, so a folder of
# small files (Segment's S3 destination writes one per batch of events) took a core ~50 ms per
# file, its lines almost nothing
SMALL_FILE_BYTES = 1 << 20
DOCUMENT_LIMIT = 256 << 20  # a JSON array / batch file is parsed whole up to this size
KEPT_RAW_BYTES = 64 << 10  # a line larger than the limit keeps this much of its start as `raw`


def too_large_reason(max_bytes: int) -> str:
    return f"message larger than {max_bytes:,} bytes"


# What a folder is searched for: Segment's message files (SPEC section 1), plain or gzip.
EVENT_SUFFIXES = (".ndjson", ".jsonl", ".json")


def is_event_file(path: Path) -> bool:
    """Whether a file found in a folder holds messages: its name ends in an event suffix
    (plain or gzip), or it is a gzip file whose name says nothing more and whose text starts
    with a JSON object, as Segment's S3 destination writes them
    (`segment-logs/<source>/<day>/<timestamp>.<id>.gz`). Hidden files are not."""
    name = path.name.lower()
    if path.name.startswith("."):
        return False
    if name.removesuffix(".gz").endswith(EVENT_SUFFIXES):
        return True
    return name.endswith(".gz") and _gzip_of_objects(path)


def _gzip_of_objects(path: Path) -> bool:
    """Whether a gzip file's text starts with `{` (after whitespace and a byte order mark)."""
    try:
        with path.open("rb") as file:
            head = zlib.decompressobj(31).decompress(file.read(4096), 256)
    except (OSError, zlib.error):
        return False
    return _json_start(head).startswith(b"{")


def _json_start(head: bytes | bytearray) -> bytes | bytearray:
    """A file's first bytes from where its JSON starts: after a byte order mark and whitespace."""
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()


def expand_paths(patterns: list[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """The files that patterns (files, folders, globs) name, as absolute resolved paths,
    relative to the working directory, each once. A file named on its own is taken whatever
    its name; in a folder or among a glob's matches (`segment-logs/**` matches folders and
    files alike), only event files (`is_event_file`) are, the others go to `skipped`. Anything
    but a regular file (a device, a FIFO, a socket) is refused before a byte is read:
    /dev/zero would never end, a FIFO would wait for a writer."""
    paths: dict[Path, None] = {}  # in order, once: `dir/**` names a file and its folders
    passed: dict[Path, None] = {}
    for pattern in patterns:
        text = str(pattern)
        # a file that exists is taken by its name, even when the name holds [ or *
        literal = not glob.has_magic(text) or os.path.lexists(text)
        matches = [text] if literal else sorted(glob.glob(text, recursive=True))
        if not matches:
            raise IngestError("no file matches this pattern", location=text)
        for match in matches:
            # resolved: a file is the same source_file however it was spelled
            p = Path(match).resolve()
            if p.is_dir():
                found = sorted(q for q in p.rglob("*") if q.is_file())
            elif not p.exists():
                raise IngestError("no such file", location=text)
            elif literal:
                _regular(p, text)
                paths[p] = None
                continue
            else:
                _regular(p, text)
                found = [p]
            for q in found:
                if is_event_file(q):
                    paths[q] = None
                else:
                    passed[q] = None
    if skipped is not None:
        skipped.extend(q for q in passed if q not in paths)
    return list(paths)


NOT_A_FILE = "not a regular file (a device, FIFO or socket): arpu ingests files and folders"


def _regular(path: Path, named: str) -> os.stat_result:
    """The file's status; IngestError unless it is a regular file."""
    try:
        status = path.stat()
    except OSError as exc:
        raise IngestError(f"cannot read: {exc.strerror}", location=named) from None
    if not stat.S_ISREG(status.st_mode):
        raise IngestError(NOT_A_FILE, location=named)
    return status


_VISIBLE = re.compile(rb"[^ \t\r\f\v]")  # a line without one is blank (\n ends it)
NUL_BYTE_REASON = "not valid JSON (it holds a NUL byte)"


def _kept(raw: bytes) -> str:
    """The text a rejected line keeps as `raw`: its first KEPT_RAW_BYTES at most (cut between
    characters), undecodable bytes and NUL as U+FFFD (PostgreSQL's text cannot hold a NUL)."""
    if len(raw) > KEPT_RAW_BYTES:
        cut = KEPT_RAW_BYTES
        for _ in range(3):  # back to the first byte of a UTF-8 character
            if raw[cut] & 0xC0 != 0x80:
                break
            cut -= 1
        raw = raw[:cut]
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _too_large(start: bytes, blank: bool, max_bytes: int) -> tuple[str, str | None]:
    """A line larger than the limit, from its start: rejected, or skipped when blank."""
    return ("", None) if blank else (_kept(start), too_large_reason(max_bytes))


def _line(raw: bytes, max_bytes: int) -> tuple[str, str | None]:
    """One line's text and forced reason (None: classify it)."""
    if len(raw.rstrip(b"\r")) > max_bytes:
        return _too_large(raw, _VISIBLE.search(raw) is None, max_bytes)
    try:
        text, reason = raw.decode("utf-8"), None
    except UnicodeDecodeError:
        text, reason = raw.decode("utf-8", errors="replace"), "not valid UTF-8"
    if "\x00" in text:  # never valid JSON, and never storable as text in PostgreSQL
        return text.replace("\x00", "\ufffd"), reason or NUL_BYTE_REASON
    return text, reason


def _decode_lines(data: bytes, max_bytes: int) -> tuple[list[str], list[str | None]]:
    """Split a chunk of whole lines. A line that is not UTF-8, holds a NUL byte or is larger
    than `max_bytes` gets a reason (and a `raw` text every engine can store): it is not lost."""
    if b"\x00" not in data:
        try:
            lines = data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            pass
        else:
            reasons: list[str | None] = [None] * len(lines)
            # a line of at most max_bytes / 4 characters has at most max_bytes bytes
            if max(map(len, lines)) > max_bytes // 4:
                for i, line in enumerate(lines):
                    if len(line) > max_bytes // 4:
                        lines[i], reasons[i] = _line(line.encode("utf-8"), max_bytes)
            return lines, reasons
    pairs = [_line(raw, max_bytes) for raw in data.split(b"\n")]
    return [p[0] for p in pairs], [p[1] for p in pairs]


class _LongLine:
    """A line found longer than the message limit before its end: read on only to find that
    end, keeping its first KEPT_RAW_BYTES and whether it holds more than whitespace."""

    def __init__(self, start: bytes) -> None:
        self.start = start[:KEPT_RAW_BYTES + 1]  # one byte more: `_kept` cuts between chars
        self.blank = _VISIBLE.search(start) is None

    def read(self, data: bytes, end: int) -> None:
        """Take data[:end], more of the line."""
        if len(self.start) <= KEPT_RAW_BYTES:
            self.start += data[:min(end, KEPT_RAW_BYTES + 1 - len(self.start))]
        if self.blank:
            self.blank = _VISIBLE.search(data, 0, end) is None


class _Truncated(Exception):
    """A gzip stream ended before its end marker; what came before it was read."""


def _blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The file's bytes in blocks, gunzipped as a stream (members one after another), so a
    truncated or corrupt gzip keeps everything before the break: then `_Truncated` is raised."""
    for block, _ in _blocks_read(path, block_bytes):
        yield block


def _blocks_read(path: Path, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """`_blocks`, each with how many bytes of the file had been read when it came out
    (progress counts what is read from disk: a gzip file's compressed bytes)."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            fh.seek(0)
            while block := fh.read(block_bytes):
                yield block, fh.tell()
            return
        fh.seek(0)
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = False  # inside a member that has not ended yet
        while compressed := fh.read(block_bytes):
            while compressed:
                try:  # at most one block out: chunks stay even, whatever the compression ratio
                    out = member.decompress(compressed, block_bytes)
                except zlib.error as exc:
                    raise _Truncated(str(exc)) from None
                pending = True
                if out:
                    yield out, fh.tell()
                if member.eof:
                    compressed, pending = member.unused_data, False
                    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    compressed = member.unconsumed_tail
        if pending:
            raise _Truncated("the gzip stream ends before its end marker")


@dataclass
class Chunk:
    """Whole lines of a file from line `first` on, as the columns DuckDB classifies: an Arrow
    table of the lines as read (`clean`), or NumPy arrays with a forced reason per line.
    `read`: bytes of the file read so far."""
    first: int
    count: int
    read: int
    columns: Any
    clean: bool = False


def _small_file_chunks(path: Path, max_bytes: int, limit: int = CHUNK_BYTES) -> list[Chunk] | None:
    """The chunks of a (small) message file when every one is clean and together they hold at
    most `limit` bytes; None for any other file (it is loaded alone)."""
    chunks, held = [], 0
    for chunk in _ndjson_chunks(path, max_bytes, limit):
        held += chunk.columns.nbytes if chunk.clean else limit + 1
        if held > limit:
            return None
        chunks.append(chunk)
    return chunks


def _joined(files: list[list[Chunk]]) -> Chunk | None:
    """The clean chunks of several files as one, each line with its file's position among
    them (`file_index`); None when they hold no line."""
    import pyarrow as pa

    tables = [chunk.columns.set_column(chunk.columns.schema.get_field_index("file_index"),
                                       "file_index", _file_index(chunk.count, i))
              for i, chunks in enumerate(files) for chunk in chunks if chunk.count]
    if not tables:
        return None
    joined = pa.concat_tables(tables)
    return Chunk(1, joined.num_rows, 0, joined, clean=True)


def _fits(data: bytes, max_bytes: int) -> bool:
    """Whether no line of `data` (whole lines) is longer than `max_bytes`: each step jumps to
    the last line end within reach, so a block of short lines takes a few steps per limit."""
    start = 0
    while len(data) - start > max_bytes:
        end = data.rfind(b"\n", start, start + max_bytes + 1)
        if end < 0:
            return False
        start = end + 1
    return True


def _clean_columns(first: int, data: bytes, max_bytes: int) -> Any:
    """The lines of `data` as an Arrow table over its bytes, nothing copied (each line keeps
    its line end), when every line is UTF-8 without NUL and within the limit; else None."""
    try:
        import numpy as np
        import pyarrow as pa
    except ImportError:  # without pyarrow, every chunk is read line by line
        return None
    if b"\x00" in data or not _fits(data, max_bytes):
        return None
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    if len(data) >= 1 << 31:  # Arrow's string offsets are 32-bit
        return None
    offsets = np.empty(len(ends) + 2, np.int32)
    offsets[0], offsets[1:-1], offsets[-1] = 0, ends + 1, len(data)
    count = len(offsets) - 1
    lines = pa.Array.from_buffers(pa.string(), count,
                                  [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    # from buffers, as the lines: converting NumPy (pa.array, pa.table of a dict) imports
    # pandas, a third of a second of the first chunk's time, on the thread that reads the file
    numbers = np.arange(first, first + count, dtype=np.int64)
    return pa.Table.from_arrays(
        [_file_index(count), pa.Array.from_buffers(pa.int64(), count,
                                                   [None, pa.py_buffer(numbers)]), lines],
        names=["file_index", "line_number", "raw"])


def _file_index(count: int, index: int = 0) -> Any:
    """An Arrow column of `count` times `index`: which file of a chunk its lines are from."""
    import numpy as np
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int32(), count,
                                 [None, pa.py_buffer(np.full(count, index, np.int32))])


def _line_columns(first: int, lines: list[str], reasons: list[str | None]) -> dict[str, Any]:
    """Lines read one by one, as NumPy arrays (DuckDB scans them in place)."""
    import numpy as np

    if first == 1 and lines and lines[0].startswith("\ufeff"):  # a byte order mark
        lines[0] = lines[0][1:]
    numbers = np.arange(first, first + len(lines), dtype=np.int64)
    return {"file_index": np.zeros(len(lines), np.int32),
            "line_number": numbers, "record_number": numbers - 1,
            "raw": np.array(lines, dtype=object),
            "forced_reason": np.array(reasons, dtype=object)}


def _chunk(first: int, data: bytes, read: int, max_bytes: int) -> Chunk:
    """Whole lines as a Chunk: clean (the common case) or line by line."""
    if first == 1 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a byte order mark
    columns = _clean_columns(first, data, max_bytes)
    if columns is not None:
        return Chunk(first, columns.num_rows, read, columns, clean=True)
    lines, reasons = _decode_lines(data, max_bytes)
    return Chunk(first, len(lines), read, _line_columns(first, lines, reasons))


def _forced(first: int, lines: list[str], reasons: list[str | None], read: int) -> Chunk:
    return Chunk(first, len(lines), read, _line_columns(first, lines, reasons))


def _whole_lines(rest: bytes, pieces: list[bytes]) -> tuple[bytes | None, bytes]:
    """`rest` (a line's start) and the blocks after it as (their whole lines, without the last
    line end; the start of the line after them), or (None, all of it) when no line ends there.
    Each byte is copied once: joining, then cutting, then slicing copied a chunk three times."""
    for i in range(len(pieces) - 1, -1, -1):
        cut = pieces[i].rfind(b"\n")
        if cut >= 0:
            last = memoryview(pieces[i])
            return (b"".join([rest, *pieces[:i], last[:cut]]),
                    b"".join([last[cut + 1:], *pieces[i + 1:]]))
    return None, b"".join([rest, *pieces])


def _ndjson_chunks(path: Path, max_bytes: int = MAX_MESSAGE_BYTES, chunk_bytes: int = CHUNK_BYTES,
                   block_bytes: int = BLOCK_BYTES) -> Iterator[Chunk]:
    """Chunks of whole lines. No line is held past `max_bytes`: one still without its end
    beyond that is read on only to find the end (`_LongLine`) and rejected, so memory stays
    bounded whatever the input. A gzip stream that ends early keeps every whole line before
    the break; the cut line is rejected."""
    line_no = 1
    rest = b""  # the start of a line whose end is not read yet: at most max_bytes + 1 bytes
    long: _LongLine | None = None
    truncated: str | None = None
    pieces: list[bytes] = []
    size = 0
    blocks = _blocks_read(path, block_bytes)
    read = 0
    while True:
        try:
            block, read = next(blocks)
        except StopIteration:
            block = b""
        except _Truncated as exc:
            truncated, block = str(exc), b""
        if block:
            pieces.append(block)
            size += len(block)
            if size < chunk_bytes:
                continue
        if long is not None:
            data = b"".join(pieces)
            end = data.find(b"\n")
            long.read(data, len(data) if end < 0 else end)
            if end >= 0:
                line, reason = _too_large(long.start, long.blank, max_bytes)
                yield _forced(line_no, [line], [reason], read)
                line_no += 1
                long, pieces = None, [data[end + 1:]]
            else:
                pieces = []
        whole, rest = _whole_lines(rest, pieces)
        pieces, size = [], 0
        if whole is not None:
            chunk = _chunk(line_no, whole, read, max_bytes)
            yield chunk
            line_no += chunk.count
        if len(rest) > max_bytes + 1:  # + 1: a CR before the line's end is not the message's
            long, rest = _LongLine(rest), b""
        if not block:
            break
    if long is not None:  # the file ends within a long line
        line, reason = _too_large(long.start, long.blank, max_bytes)
        yield _forced(line_no, [line], [reason], read)
    elif truncated and line_no == 1 and not rest:
        raise IngestError(f"cannot read: {truncated}", location=str(path))
    elif rest:
        if truncated:
            lines, _ = _decode_lines(rest, max_bytes)
            reason = f"gzip stream truncated ({truncated}): the line is cut off"
            yield _forced(line_no, lines, [reason] * len(lines), read)
        else:
            yield _chunk(line_no, rest, read, max_bytes)


def _document_records(text: str) -> list[tuple[int, str]] | None:
    """A JSON array, a {"batch": [...]} payload or one pretty-printed message, as
    (line number, raw text) per message; None when the text is not one strict JSON document."""
    if _strict_problem(text) is not None:
        return None
    value = json.loads(text)
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if isinstance(value, dict) and isinstance(value.get("batch"), list):
        match = re.search(r'"batch"\s*:\s*\[', text)
        if match is None:
            return None
        start = match.end() - 1
    elif not isinstance(value, list):
        return [(text.count("\n", 0, start) + 1, text.strip())]
    records = []
    pos = start + 1
    ws = re.compile(r"[\s,]*")
    while True:
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] == "]":
            break
        _, end = decoder.raw_decode(text, pos)
        records.append((text.count("\n", 0, pos) + 1, text[pos:end]))
        pos = end
    return records


def _head(path: Path, limit: int) -> bytearray:
    """The (gunzipped) file's first blocks, up to just past `limit` bytes; less when it ends
    first or a gzip stream breaks early."""
    out = bytearray()
    try:
        for block in _blocks(path):
            out += block
            if len(out) > limit:
                break
    except _Truncated:
        pass
    return out


SNIFF_BYTES = 1 << 16  # at least this much of a file tells a document from NDJSON


def _sniff_document(path: Path) -> list[tuple[int, str]] | None:
    """Records of a whole-document JSON file, or None for newline-delimited JSON. Only a file
    that starts like a document is read whole (up to DOCUMENT_LIMIT): one opening with an
    array, with a batch payload, or with a line that is not a whole message (a pretty-printed
    document). A first line too long to see whole is a message, unless it may be a batch."""
    head = _head(path, SNIFF_BYTES)
    start = _json_start(head)
    if not start.startswith((b"[", b"{")):
        return None  # NDJSON, or text no JSON document starts with
    newline = start.find(b"\n")
    if newline >= 0 or len(head) <= SNIFF_BYTES:  # the first line is whole in the head
        try:
            value = json.loads(bytes(start[:newline] if newline >= 0 else start).decode())
            if isinstance(value, dict) and not isinstance(value.get("batch"), list):
                return None
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    elif not start.startswith(b"[") and b'"batch"' not in head:
        return None
    del head, start
    if path.stat().st_size > DOCUMENT_LIMIT:
        return None
    data = _head(path, DOCUMENT_LIMIT)
    if len(data) > DOCUMENT_LIMIT:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    del data
    try:
        return _document_records(text)
    except (ValueError, RecursionError):
        return None


def _record(raw: str, max_bytes: int) -> tuple[str, str | None]:
    """A message of a whole-document file as a line: its text and forced reason."""
    if len(raw) > max_bytes // 4 and len(encoded := raw.encode("utf-8")) > max_bytes:
        return _too_large(encoded, False, max_bytes)
    return raw, None


def _document_chunk(records: list[tuple[int, str]], size: int, max_bytes: int) -> Chunk:
    """A whole-document file's messages as one chunk, numbered by record."""
    import numpy as np

    line_numbers, raws = zip(*records, strict=True) if records else ((), ())
    limited = [_record(raw, max_bytes) for raw in raws]
    return Chunk(1, len(raws), size, {
        "file_index": np.zeros(len(raws), np.int32),
        "line_number": np.array(line_numbers, dtype=np.int64),
        "record_number": np.arange(len(raws), dtype=np.int64),
        "raw": np.array([r[0] for r in limited], dtype=object),
        "forced_reason": np.array([r[1] for r in limited], dtype=object)})
