"""`arpu ingest`: Segment messages from files into `raw_events`, bad lines into `raw_rejected`.

Files stream in chunks; Python only splits bytes into lines and hands each chunk to DuckDB, which
parses, validates and types every line in bulk. Python reads a line itself only where DuckDB
would read it otherwise than a JSON reader: a line that may break RFC 8259 (NaN, a trailing
comma), repeats a key (DuckDB takes the first value, SPEC the last), carries `products` as a
string holding an array, or may nest deeper than MAX_DEPTH. Accounting holds for every file:
`lines read = loaded + rejected` (blank lines are skipped and not counted).

Whatever ingest accepts, every engine stores and every build reads: a line larger than the
message limit is read no further than the limit (memory stays bounded whatever the input), JSON
nests at most MAX_DEPTH levels, no string holds a NUL (PostgreSQL's text cannot), and money
fields stay within +-max_number, so that sums cannot overflow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import os
import re
import stat
import string
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

import duckdb

from runner.errors import IngestError
from runner.faults import fault_point

CHUNK_BYTES = 8 << 20
BLOCK_BYTES = 1 << 20  # read and gunzip in blocks of this size
DOCUMENT_LIMIT = 256 << 20  # a JSON array / batch file is parsed whole up to this size
MAX_MESSAGE_BYTES = 1 << 20  # SPEC: size limits default to at least 1 MiB per message ...
MAX_PRODUCTS = 10_000  # ... and 10,000 products per order
# price, quantity, revenue and total above this are rejected: a billion orders of the largest
# stay far from a double's overflow (a sum that overflows is infinity, which fails the build)
MAX_NUMBER = 1e15
# JSON nested deeper is rejected, so that every engine reads what is loaded: Python's json
# stops near its recursion limit (1,000), Spark's Jackson at 1,000 levels, PostgreSQL's parser
# runs out of stack between 10,000 and 100,000
MAX_DEPTH = 512
KEPT_RAW_BYTES = 64 << 10  # a line larger than the limit keeps this much of its start as `raw`
WHITESPACE = " \t\n\r\f\v"  # a string of only these is missing, as an empty one

RAW_TABLES = """
create table if not exists raw_events (
    load_id bigint, loaded_at timestamp, source_file varchar, line_number bigint,
    record_number bigint, message_id varchar, message_type varchar, event varchar,
    user_id varchar, anonymous_id varchar, event_ts timestamp, received_at timestamp,
    sent_at timestamp, original_ts timestamp, properties json, traits json, context json,
    content_id varchar
);
create table if not exists raw_rejected (
    load_id bigint, loaded_at timestamp, source_file varchar, line_number bigint,
    raw varchar, reason varchar
);
create table if not exists raw_loads (
    load_id bigint, loaded_at timestamp, source_file varchar, bytes bigint,
    lines_read bigint, loaded bigint, rejected bigint
);
"""

CHECK_MACROS = r"""
-- `s` without leading and trailing WHITESPACE (DuckDB's E'' strings know no \v)
create or replace temp macro _trim_ws(s) as (trim(s, E' \t\n\r\f' || chr(11)));
-- a number-valued field must be absent, null, or a number or numeric string in
-- [0, $max_number]; the first test of each kind is the common case, a number within it
create or replace temp macro _num_problem(v) as (
    case
        when v is null or json_type(v) = 'NULL' then null
        when json_type(v) in ('BIGINT', 'UBIGINT', 'DOUBLE') then
            case when v::double between 0 and $max_number then null
                 when not isfinite(v::double) then 'is not a finite number'
                 when v::double < 0 then 'is negative'
                 else 'is larger than $max_number_text' end
        when json_type(v) = 'VARCHAR' then
            case when not regexp_full_match(trim(v ->> '$'),
                                            '[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?')
                      then 'is not a number'
                 when try_cast(trim(v ->> '$') as double) between 0 and $max_number then null
                 when not isfinite(try_cast(trim(v ->> '$') as double)) then 'is not a number'
                 when try_cast(trim(v ->> '$') as double) < 0 then 'is negative'
                 else 'is larger than $max_number_text' end
        else 'is not a number'
    end
);
-- ISO 8601 date or date-time with an optional offset; anything looser is not a time. A value
-- with whitespace around it is trimmed (rarely needed: trimming a set of characters is slow)
create or replace temp macro _iso_ts(v) as (
    case when regexp_full_match(v, '\d{4}-\d{2}-\d{2}'
        || '([Tt ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d([.,]\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?)?')
    then try_cast(replace(upper(v), ',', '.') as timestamptz) at time zone 'UTC' end
);
create or replace temp macro _ts(v) as (
    case when ascii(v) > 32 and not regexp_matches(v, '[ \t\n\r\f\v]$') then _iso_ts(v)
         else _iso_ts(_trim_ws(v)) end
);
-- SPEC's "missing": an empty or whitespace-only string is null. Most values start with a
-- visible character and are not trimmed; `s` should be a column (a macro repeats its argument).
create or replace temp macro _given(s) as (
    case when ascii(s) > 32 then s when _trim_ws(s) <> '' then s end
);
-- whether a list of an object's keys names one twice; a short list (any real object) compares
-- positions, which is cheaper than hashing
create or replace temp macro _repeats_a_key(keys) as (
    case when len(keys) <= 64
         then list_bool_or(list_transform(keys, lambda k, i: list_position(keys, k) <> i))
         else len(keys) <> list_unique(keys) end
);
"""

# Classifies the chunk's lines into `$table`: typed columns, a reason for a rejected line, and
# `recheck` for a line Python must read first (`_canonical`): one that repeats a key where
# ingest reads (DuckDB's JSON functions take a repeated key's first value, JSON readers the
# last), or whose `products` is a string. `$source` is a CTE `texts` giving each line's kept
# `raw` text and the `text` parsed.
CLASSIFY = r"""
create or replace temp table $table as
with $source, valid as (
    -- a valid JSON text that starts with '{' is an object: no second parse to find out
    select *, keys is not null as is_json, starts_with(ltrim(text), '{') as is_object,
        -- \u0000 escaped by an odd number of backslashes: a NUL, which PostgreSQL's text
        -- cannot hold (its json type stores it, and fails every model that reads the line);
        -- `text`: a `products` string read as an array may hold one. A case, not an `and`:
        -- DuckDB would run the regular expression on every line
        case when contains(text, '\u0000')
             then regexp_matches(text, '(^|[^\\])(\\\\)*\\u0000') else false end as has_nul
    from (
        -- the keys of the objects whose repeated keys would matter; the parse that finds
        -- them also tells valid JSON (an error, caught) from not
        select *, try(json_keys(text, ['$', '$.properties', '$.traits'])) as keys from texts
    )
), fields as (
    select *,
        case when is_json and is_object then json_extract(text, [
            '$.type', '$.event', '$.messageId', '$.userId', '$.anonymousId',
            '$.timestamp', '$.originalTimestamp', '$.receivedAt', '$.sentAt',
            '$.properties', '$.traits', '$.context',
            '$.properties.price', '$.properties.quantity', '$.properties.revenue',
            '$.properties.total', '$.properties.products']) end as f
    from valid
), vals as (
    select line_number, record_number, raw, forced_reason, is_json, is_object, has_nul,
        f[1] ->> '$' as type_text, f[2] ->> '$' as event_text, f[3] ->> '$' as message_id_text,
        f[4] ->> '$' as user_id_text, f[5] ->> '$' as anonymous_id_text,
        f[6] ->> '$' as ts_text, f[7] ->> '$' as ots_text, f[8] ->> '$' as rat_text,
        f[9] ->> '$' as sat_text,
        f[10] as properties, f[11] as traits, f[12] as context,
        _num_problem(f[13]) as price_problem, _num_problem(f[14]) as quantity_problem,
        _num_problem(f[15]) as revenue_problem, _num_problem(f[16]) as total_problem,
        f[17] as products, keys[1] as top_keys, keys[2] as property_keys,
        keys[3] as trait_keys
    from fields
), present as (
    select *,
        _given(type_text) as message_type, _given(event_text) as event,
        _given(message_id_text) as message_id, _given(user_id_text) as user_id,
        _given(anonymous_id_text) as anonymous_id,
        _given(ts_text) as ts_raw, _given(ots_text) as ots_raw, _given(rat_text) as rat_raw,
        _given(sat_text) as sat_raw
    from vals
), checked as (
    select *,
        coalesce(ts_raw, ots_raw, rat_raw) as time_raw,
        _ts(coalesce(ts_raw, ots_raw, rat_raw)) as event_ts,
        case when products is null or products = 'null' then null
             when starts_with(products, '"')
                 then 'properties.products is a string that does not hold a JSON array'
             when not starts_with(products, '[') then 'properties.products is not an array'
             -- json_extract re-serialises minified, numbers as written: a clean number starts
             -- with a digit, has no exponent and fewer integer digits than max_number (so it
             -- is finite and within the bound), or is null; only other arrays need the
             -- element-by-element check
             when not regexp_matches(products,
                 '"(price|quantity|revenue|total)":([^0-9n]|[0-9.]*[eE]|[0-9]{$number_digits})')
                 then null
             else list_filter(list_transform(json_extract(products, '$[*]'), lambda p, i: coalesce(
                 'properties.products[' || (i - 1) || '].price ' || _num_problem(p -> '$.price'),
                 'properties.products[' || (i - 1) || '].quantity '
                     || _num_problem(p -> '$.quantity'),
                 'properties.products[' || (i - 1) || '].revenue '
                     || _num_problem(p -> '$.revenue'),
                 'properties.products[' || (i - 1) || '].total ' || _num_problem(p -> '$.total'))
             ), lambda x: x is not null)[1]
        end as product_problem,
        case when not is_json or not is_object or forced_reason is not null
                 then false  -- rejected before keys matter
             when starts_with(products, '"') then true
             when _repeats_a_key(top_keys) then true
             when _repeats_a_key(property_keys) then true
             when _repeats_a_key(trait_keys) then true
             when starts_with(products, '[') then coalesce(list_bool_or(list_transform(
                 json_keys(products, '$[*]'), lambda ks: _repeats_a_key(ks))), false)
             else false
        end as recheck
    from present
)
select line_number, record_number, raw, message_type, event, message_id, user_id, anonymous_id,
    event_ts, _ts(rat_raw) as received_at, _ts(sat_raw) as sent_at, _ts(ots_raw) as original_ts,
    properties, traits, context,
    -- messages without a messageId are identified by their exact text
    case when message_id is null then 'md5:' || md5(raw) end as content_id,
    case
        when forced_reason is not null then forced_reason
        when not is_json then 'not valid JSON'
        when not is_object then 'not a JSON object'
        when has_nul then '$nul_reason'
        when time_raw is null then 'no event time (timestamp, originalTimestamp, receivedAt)'
        when event_ts is null then 'invalid event time: ' || left(time_raw, 64)
        when user_id is null and anonymous_id is null then 'neither userId nor anonymousId'
        when properties is not null and properties <> 'null' and not starts_with(properties, '{')
            then 'properties is not an object'
        when price_problem is not null then 'properties.price ' || price_problem
        when quantity_problem is not null then 'properties.quantity ' || quantity_problem
        when revenue_problem is not null then 'properties.revenue ' || revenue_problem
        when total_problem is not null then 'properties.total ' || total_problem
        when products is not null and starts_with(products, '[')
             and json_array_length(products) > $max_products
            then 'properties.products has more than $max_products_text items'
        when product_problem is not null then product_problem
    end as reason,
    recheck,
    -- may nest deeper than MAX_DEPTH: it has that many brackets (and twice as many bytes, a
    -- test that spares counting in most lines); Python tells (`_too_deep`)
    case when forced_reason is null and strlen(raw) > 2 * $max_depth
         then strlen(raw) - strlen(replace(replace(raw, '{', ''), '[', '')) > $max_depth
         else false end as deep,
    -- DuckDB's JSON reader accepts NaN, Infinity and trailing commas; RFC 8259 does not.
    is_json and (contains(raw, 'NaN') or contains(raw, 'Infinity')
                 or regexp_matches(raw, ',\s*[\]}]')) as suspicious
from checked
"""

# The lines of a chunk as read (a CRLF file's lines end in CR; rtrim alone would scan every
# line, so ask first); blank lines are skipped.
CHUNK_SOURCE = r"""src as (
    select line_number, record_number,
        case when ends_with(raw, chr(13)) then rtrim(raw, chr(13)) else raw end as raw,
        cast(forced_reason as varchar) as forced_reason  -- all None: NumPy gives no type
    from _chunk
    where starts_with(raw, '{') or _trim_ws(raw) <> ''
), texts as (
    select *, raw as text from src
)"""

# Lines `_canonical` rewrote: the rewritten text is parsed, the line as read is kept.
RECHECK_SOURCE = r"""texts as (
    select line_number, record_number, raw, cast(forced_reason as varchar) as forced_reason,
        canonical as text
    from _recheck
)"""


NUL_REASON = "holds \\u0000 (NUL), which PostgreSQL cannot store as text"
DEPTH_REASON = "JSON nested too deeply"  # more than MAX_DEPTH levels


def _classify_sql(table: str, source: str, max_products: int, max_number: float) -> str:
    return string.Template(CLASSIFY).safe_substitute(
        table=table, source=source, max_products=int(max_products),
        max_products_text=f"{max_products:,}", max_depth=MAX_DEPTH, nul_reason=NUL_REASON,
        # a number written with fewer integer digits than max_number (no exponent) is below it
        number_digits=min(len(str(int(max_number))), 300))


def _check_macros(max_number: float) -> str:
    return string.Template(CHECK_MACROS).safe_substitute(
        max_number=repr(float(max_number)), max_number_text=number_text(max_number))


def number_text(value: float) -> str:
    """1e15 as `1e15`, 2500 as `2500`, 1234567 as `1234567`: how a bound reads in a reason."""
    short = f"{value:g}"
    text = short if float(short) == value else repr(float(value))
    return text.replace("e+", "e").removesuffix(".0")


def too_large_reason(max_bytes: int) -> str:
    return f"message larger than {max_bytes:,} bytes"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _canonical(raw: str) -> tuple[str, str | None]:
    """The line as JSON readers read it, for DuckDB to classify: a repeated key takes its last
    value, and a `properties.products` string holding a JSON array becomes that array (empty or
    whitespace-only: null; anything else stays a string, which is then rejected). Returns
    (text, None), or (raw, reason) for a line that is not strict JSON."""
    try:
        message = json.loads(raw, parse_constant=_no_constant)
        properties = message.get("properties") if isinstance(message, dict) else None
        if isinstance(properties, dict) and isinstance(properties.get("products"), str):
            held = properties["products"]
            if not held.strip(WHITESPACE):
                properties["products"] = None
            else:
                with contextlib.suppress(ValueError):
                    products = json.loads(held, parse_constant=_no_constant)
                    if isinstance(products, list):
                        properties["products"] = products
        # a number too large for a double reads as inf and is written Infinity, which DuckDB
        # reads back as inf: rejected as not finite, as the number itself would be
        text = json.dumps(message, separators=(",", ":"))
    except ValueError:
        return raw, "not valid JSON"
    except RecursionError:
        return raw, DEPTH_REASON
    if _too_deep(text):  # a `products` string held a deep array
        return raw, DEPTH_REASON
    return text, None


def _strict_problem(raw: str) -> str | None:
    try:
        json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        return "not valid JSON"
    except RecursionError:
        return DEPTH_REASON
    return None


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _too_deep(text: str) -> bool:
    """Whether the arrays and objects of a JSON text nest more than MAX_DEPTH levels (`{}` is
    one level); read without recursion, outside strings."""
    if text.count("{") + text.count("[") <= MAX_DEPTH:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


@dataclass
class FileResult:
    path: str
    bytes: int = 0
    lines_read: int = 0
    loaded: int = 0
    rejected: int = 0


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


# What a folder is searched for: Segment's message files (SPEC section 1), plain or gzip.
EVENT_SUFFIXES = (".ndjson", ".jsonl", ".json")


def is_event_file(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(EVENT_SUFFIXES) and not path.name.startswith(".")


def expand_paths(patterns: list[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """The files that patterns (files, folders, globs) name, as absolute resolved paths,
    relative to the working directory. A file named on its own is taken whatever its name; in
    a folder, only event files (`EVENT_SUFFIXES`, plain or .gz) are, the others go to
    `skipped`. Anything but a regular file (a device, a FIFO, a socket) is refused before a
    byte is read: /dev/zero would never end, a FIFO would wait for a writer."""
    paths: list[Path] = []
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
                for q in sorted(q for q in p.rglob("*") if q.is_file()):
                    if is_event_file(q):
                        paths.append(q)
                    elif skipped is not None:
                        skipped.append(q)
            elif not p.exists():
                raise IngestError("no such file", location=text)
            else:
                _regular(p, text)
                paths.append(p)
    return paths


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


def _blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks, gunzipped as a stream (members one after another), so a
    truncated or corrupt gzip keeps everything before the break: then `_Truncated` is raised."""
    for block, _ in _blocks_read(path):
        yield block


def _blocks_read(path: Path) -> Iterator[tuple[bytes, int]]:
    """`_blocks`, each with how many bytes of the file had been read when it came out
    (progress counts what is read from disk: a gzip file's compressed bytes)."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            fh.seek(0)
            while block := fh.read(BLOCK_BYTES):
                yield block, fh.tell()
            return
        fh.seek(0)
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = False  # inside a member that has not ended yet
        while compressed := fh.read(BLOCK_BYTES):
            while compressed:
                try:  # at most one block out: chunks stay even, whatever the compression ratio
                    out = member.decompress(compressed, BLOCK_BYTES)
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


def _ndjson_chunks(path: Path, max_bytes: int = MAX_MESSAGE_BYTES
                   ) -> Iterator[tuple[int, list[str], list[str | None], int]]:
    """(first line number, lines, forced reasons, bytes of the file read so far) per chunk of
    whole lines. No line is held past `max_bytes`: one still without its end beyond that is
    read on only to find the end (`_LongLine`) and rejected, so memory stays bounded whatever
    the input. A gzip stream that ends early keeps every whole line before the break; the cut
    line is rejected."""
    line_no = 1
    rest = b""  # the start of a line whose end is not read yet: at most max_bytes + 1 bytes
    long: _LongLine | None = None
    truncated: str | None = None
    pieces: list[bytes] = []
    size = 0
    blocks = _blocks_read(path)
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
            if size < CHUNK_BYTES:
                continue
        data = b"".join(pieces)
        pieces, size = [], 0
        lines: list[str] = []
        reasons: list[str | None] = []
        if long is not None:
            end = data.find(b"\n")
            long.read(data, len(data) if end < 0 else end)
            if end >= 0:
                line, reason = _too_large(long.start, long.blank, max_bytes)
                lines.append(line)
                reasons.append(reason)
                long, data = None, data[end + 1:]
            else:
                data = b""
        data = rest + data
        cut = data.rfind(b"\n")
        if cut >= 0:
            rest = data[cut + 1:]
            more, why = _decode_lines(data[:cut], max_bytes)
            lines += more
            reasons += why
        else:
            rest = data
        if len(rest) > max_bytes + 1:  # + 1: a CR before the line's end is not the message's
            long, rest = _LongLine(rest), b""
        if lines:
            yield line_no, lines, reasons, read
            line_no += len(lines)
        if not block:
            break
    if long is not None:  # the file ends within a long line
        line, reason = _too_large(long.start, long.blank, max_bytes)
        yield line_no, [line], [reason], read
    elif truncated and line_no == 1 and not rest:
        raise IngestError(f"cannot read: {truncated}", location=str(path))
    elif rest:
        lines, reasons = _decode_lines(rest, max_bytes)
        if truncated:
            reasons = [f"gzip stream truncated ({truncated}): the line is cut off"] * len(lines)
        yield line_no, lines, reasons, read


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
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
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


class Loader:
    """Loads files into one DuckDB connection's raw tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection, load_id_offset: int = 0,
                 workers: int | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_products: int = MAX_PRODUCTS, max_number: float = MAX_NUMBER) -> None:
        """Limits: a message of more than `max_message_bytes` (read no further), an order of
        more than `max_products` products, a price, quantity, revenue or total (in properties
        or a product) above `max_number` are rejected."""
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
        con.execute("set TimeZone = 'UTC'")
        con.execute(RAW_TABLES)

    def load(
        self, paths: list[Path], progress: Callable[[int], None] | None = None
    ) -> IngestResult:
        started = time.perf_counter()
        result = IngestResult()
        # a commit per chunk, not a checkpoint per chunk; the setting is the database's, so a
        # build that ingests first gets its own back
        threshold = self.con.execute("select current_setting('checkpoint_threshold')").fetchall()
        self.con.execute("set checkpoint_threshold = '1GB'")
        try:
            self._load(paths, progress, result)
        finally:
            self.con.execute(f"set checkpoint_threshold = '{threshold[0][0]}'")
        result.seconds = time.perf_counter() - started
        return result

    def _load(self, paths: list[Path], progress: Callable[[int], None] | None,
              result: IngestResult) -> None:
        # the rows of a load that never finished are removed by the caller first
        # (Context.discard_unfinished_loads); its file is loaded again whole
        for path in paths:
            result.files.append(self._load_file(path, progress))  # committed file by file
            fault_point("ingest:file")

    def _load_file(self, path: Path, progress: Callable[[int], None] | None) -> FileResult:
        import numpy as np  # here: a build that ingests nothing does not pay its import

        path = path.resolve()  # source_file: one spelling per file
        try:
            size = _regular(path, str(path)).st_size
            records = _sniff_document(path)
        except OSError as exc:
            raise IngestError(f"cannot read: {exc.strerror}", location=str(path)) from None
        load_id = int(self.con.execute("select coalesce(max(load_id), 0) + 1 from raw_loads")
                      .fetchall()[0][0]) + self.load_id_offset
        loaded_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        res = FileResult(str(path), bytes=size)

        # (line numbers, lines, forced reasons, bytes of the file read) per chunk
        chunks: Any
        if records is not None:
            line_numbers, raws = zip(*records, strict=True) if records else ((), ())
            limited = [_record(raw, self.max_message_bytes) for raw in raws]
            chunks = [(np.array(line_numbers, dtype=np.int64), [r[0] for r in limited],
                       [r[1] for r in limited], size)]
        else:
            chunks = _read_ahead(
                (np.arange(first, first + len(lines), dtype=np.int64), lines, reasons, read)
                for first, lines, reasons, read in _ndjson_chunks(path, self.max_message_bytes))
        # One transaction per chunk keeps memory flat on any file size; the load counts once
        # its raw_loads row is written, and `load` removes the rows of a load that did not.
        # Chunks are classified on several cursors at once: a chunk is one row group, which
        # DuckDB runs on one thread, so this is what keeps every core busy.
        cursors: Queue[duckdb.DuckDBPyConnection] = Queue()
        for _ in range(self.workers):
            cursor = self.con.cursor()
            cursor.execute("set TimeZone = 'UTC'")
            cursor.execute(self.check_macros)
            cursors.put(cursor)

        def classify(chunk: dict[str, Any]) -> tuple[int, int]:
            cursor = cursors.get()
            try:
                cursor.execute("begin transaction")
                try:
                    counts = self._load_chunk(cursor, chunk, str(path), load_id, loaded_at)
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
                    record_base = 0
                    reported = 0  # bytes of the file handed to progress
                    for line_numbers, raws, reasons, read in chunks:
                        if not raws:
                            continue
                        if line_numbers[0] == 1 and raws[0].startswith("\ufeff"):
                            raws[0] = raws[0][1:]
                        # NumPy arrays, scanned by DuckDB in place (no pandas to import)
                        chunk = {
                            "line_number": line_numbers,
                            "record_number": np.arange(record_base, record_base + len(raws),
                                                       dtype=np.int64),
                            "raw": np.array(raws, dtype=object),
                            "forced_reason": np.array(reasons, dtype=object),
                        }
                        record_base += len(raws)
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
        finally:
            while not cursors.empty():
                cursors.get().close()
        return res

    def _load_chunk(
        self, con: duckdb.DuckDBPyConnection, chunk: dict[str, Any], source_file: str,
        load_id: int, loaded_at: dt.datetime
    ) -> tuple[int, int]:
        """Classify one chunk into raw_events and raw_rejected: (lines read, rejected)."""
        con.register("_chunk", chunk)
        try:
            con.execute(self.classify_sql)
        finally:
            con.unregister("_chunk")
        for record_number, raw in con.execute(
                "select record_number, raw from _parsed where deep").fetchall():
            if _too_deep(raw):  # rejected as it is: read again by nobody
                con.execute("update _parsed set reason = ?, recheck = false, suspicious = false "
                            "where record_number = ?", [DEPTH_REASON, record_number])
        self._recheck(con)
        suspicious = con.execute(
            "select record_number, raw from _parsed where suspicious and not recheck"
        ).fetchall()
        for record_number, raw in suspicious:
            problem = _strict_problem(raw)
            if problem:
                con.execute("update _parsed set reason = ? where record_number = ?",
                            [problem, record_number])
        con.execute(
            """insert into raw_events select ?, ?, ?, line_number, record_number, message_id,
                   coalesce(message_type, case when event is not null then 'track' end), event,
                   user_id, anonymous_id, event_ts, received_at, sent_at, original_ts,
                   properties, traits, context, content_id
               from _parsed where reason is null""",
            [load_id, loaded_at, source_file],
        )
        con.execute(
            "insert into raw_rejected select ?, ?, ?, line_number, raw, reason "
            "from _parsed where reason is not null",
            [load_id, loaded_at, source_file],
        )
        read, bad = con.execute(
            "select count(*), count(reason) from _parsed").fetchall()[0]
        con.execute("drop table _parsed")
        return int(read), int(bad)

    def _recheck(self, con: duckdb.DuckDBPyConnection) -> None:
        """Classify again, from the text `_canonical` gives, the lines the first pass marked
        (a repeated key, a `products` string); each keeps its raw text and content_id."""
        import numpy as np

        marked = con.execute(
            "select line_number, record_number, raw from _parsed where recheck").fetchall()
        if not marked:
            return
        canonical = [_canonical(raw) for _, _, raw in marked]
        con.register("_recheck", {
            "line_number": np.array([m[0] for m in marked], dtype=np.int64),
            "record_number": np.array([m[1] for m in marked], dtype=np.int64),
            "raw": np.array([m[2] for m in marked], dtype=object),
            "forced_reason": np.array([c[1] for c in canonical], dtype=object),
            "canonical": np.array([c[0] for c in canonical], dtype=object),
        })
        try:
            con.execute(self.recheck_sql)
        finally:
            con.unregister("_recheck")
        con.execute("delete from _parsed where record_number in "
                    "(select record_number from _reparsed)")
        # strictness was checked by `_canonical`: not suspicious again
        con.execute("insert into _parsed select * replace (true as recheck) from _reparsed")
        con.execute("drop table _reparsed")
