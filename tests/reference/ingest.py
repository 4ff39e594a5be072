"""SPEC section 1 in plain Python: split files into messages, validate, reject, dedupe.

Readings (agreed with the runner's author, see the module docstring of `spec_impl`):
- strict RFC 8259 JSON; each line must be an object; a whole file may instead be one JSON array,
  a Segment batch `{"batch": [...]}` or a single (pretty-printed) object; within one object a
  repeated key takes its last value (as `json` reads it);
- a field ingest reads (type, event, messageId, userId, anonymousId, timestamp,
  originalTimestamp, receivedAt) is missing when absent, null, or a string that is empty or only
  whitespace (" \t\n\r\f\v"); numeric ids are used as their string form;
- event time = the first of timestamp / originalTimestamp / receivedAt that is not missing; if
  that one does not parse as ISO 8601 the message is rejected;
- price / quantity / revenue / total (properties and each product) must be missing (null, or a
  string empty or only whitespace: then the product has no price, a quantity of 1, the order
  falls back to the next revenue rule), a number or a numeric string, finite, >= 0 and
  <= MAX_NUMBER; `products`, when not missing, must be an
  array or a string holding one (which is then read as that array);
- size limits: a message of more than MAX_MESSAGE_BYTES (UTF-8) or an order of more than
  MAX_PRODUCTS products is rejected; a rejected line that large keeps its first KEPT_RAW_BYTES
  as `raw`;
- what every engine can hold: a message nested more than MAX_DEPTH levels (with `products`
  read from its string), or holding a NUL character anywhere (a raw NUL byte is not JSON; an
  escaped one, in a string or a key, PostgreSQL's text cannot store) is rejected; a NUL byte
  in a rejected line's `raw` reads U+FFFD.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

NUMERIC_FIELDS = ("price", "quantity", "revenue", "total")
TIME_FIELDS = ("timestamp", "originalTimestamp", "receivedAt")
WHITESPACE = " \t\n\r\f\v"
MAX_MESSAGE_BYTES = 1 << 20  # SPEC: configurable, default at least 1 MiB ...
MAX_PRODUCTS = 10_000  # ... and 10,000 products per order
MAX_NUMBER = 1e15  # money and quantities beyond this could overflow a sum
MAX_DEPTH = 512
KEPT_RAW_BYTES = 64 << 10

_NUMERIC_STRING = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


class Reject(Exception):
    """A message that goes to rejected_events; the message is the reason."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def loads_strict(text: str) -> Any:
    return _DECODER.decode(text)


def parse_iso(value: Any) -> datetime | None:
    """ISO 8601 date or date-time with any offset -> naive UTC; None when it does not parse."""
    if not isinstance(value, str):
        return None
    m = _ISO.fullmatch(value.strip(WHITESPACE))
    if not m:
        return None
    frac = (m["f"] or "")[:6].ljust(6, "0")
    try:
        dt = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]),
            int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0), int(frac),
        )
    except ValueError:
        return None
    tz = m["tz"]
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            return None
        dt -= sign * timedelta(hours=hours, minutes=minutes)
    return dt


def missing(value: Any) -> bool:
    """SPEC's "missing": absent (None here), null, or a string empty or only whitespace."""
    return value is None or (isinstance(value, str) and not value.strip(WHITESPACE))


def id_string(value: Any) -> str | None:
    """userId / anonymousId / messageId: None when missing; numbers as text."""
    if missing(value) or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def text_value(value: Any) -> str | None:
    """Category, product_id, sku, name, order_id, currency, traits: exact string, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def parse_number(value: Any, where: str) -> float | None:
    """A SPEC number: missing, a JSON number or a numeric string; finite and not negative."""
    if missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Reject(f"invalid number in {where}: {json.dumps(value)[:40]}")
    if isinstance(value, str):
        if not _NUMERIC_STRING.fullmatch(value.strip(WHITESPACE)):
            raise Reject(f"invalid number in {where}: {json.dumps(value)[:40]}")
        number = float(value.strip(WHITESPACE))
    else:
        number = float(value)
    if not math.isfinite(number):
        raise Reject(f"invalid number in {where}: not finite")
    if number < 0:
        raise Reject(f"negative number in {where}")
    if number > MAX_NUMBER:
        raise Reject(f"number above {MAX_NUMBER} in {where}")
    return number


def depth(value: Any) -> int:
    """Levels of arrays and objects (`{}` is 1), counted without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def holds_nul(value: Any) -> bool:
    """Whether a NUL character is in any string or key of a parsed value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def kept_raw(raw: str) -> str:
    """What rejected_events keeps of a line: its first KEPT_RAW_BYTES (whole characters) when
    it is larger than the message limit, and a NUL byte as U+FFFD."""
    encoded = raw.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_MESSAGE_BYTES:
        raw = encoded[:KEPT_RAW_BYTES].decode("utf-8", "ignore").rstrip("\r")
    return raw.replace("\x00", "\ufffd")


@dataclass
class Message:
    source_file: str
    line_number: int
    load_index: int
    raw: str
    obj: dict
    type: str | None
    event: str | None
    message_id: str | None
    user_id: str | None
    anonymous_id: str | None
    event_ts: datetime
    received_at: datetime | None
    properties: dict
    products: list | None
    numbers: dict  # field -> parsed number for properties.<field>
    product_numbers: list  # per product: field -> parsed number
    event_id: str = ""
    user_key: str = ""


def _products(properties: dict) -> list | None:
    """`properties.products`: an array, or a string holding one (read as that array)."""
    products = properties.get("products")
    if isinstance(products, str):
        if missing(products):
            return None
        try:
            products = loads_strict(products)
        except ValueError:
            raise Reject("properties.products is a string that is not JSON") from None
        if not isinstance(products, list):
            raise Reject("properties.products is a string that does not hold an array")
        properties["products"] = products
    if products is not None and not isinstance(products, list):
        raise Reject("properties.products is not an array")
    return products


def _validate(obj: Any) -> dict:
    """Raise Reject with the reason, or return the typed fields."""
    if not isinstance(obj, dict):
        raise Reject("not a JSON object")
    event_ts = None
    for name in TIME_FIELDS:
        if not missing(obj.get(name)):
            event_ts = parse_iso(obj[name])
            if event_ts is None:
                raise Reject(f"unparseable event time in {name}: {json.dumps(obj[name])[:40]}")
            break
    if event_ts is None:
        raise Reject("missing event time (timestamp, originalTimestamp, receivedAt)")
    user_id, anonymous_id = id_string(obj.get("userId")), id_string(obj.get("anonymousId"))
    if user_id is None and anonymous_id is None:
        raise Reject("missing userId and anonymousId")
    properties = obj.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    numbers = {f: parse_number(properties.get(f), f"properties.{f}") for f in NUMERIC_FIELDS}
    products = _products(properties)
    product_numbers: list = []
    if products is not None:
        if len(products) > MAX_PRODUCTS:
            raise Reject(f"more than {MAX_PRODUCTS} products")
        for i, product in enumerate(products):
            product = product if isinstance(product, dict) else {}
            product_numbers.append({
                f: parse_number(product.get(f), f"properties.products[{i}].{f}")
                for f in NUMERIC_FIELDS
            })
    received_at = parse_iso(obj.get("receivedAt"))
    mtype = None if missing(obj.get("type")) else obj["type"]
    event = None if missing(obj.get("event")) else obj["event"]
    if mtype is None and event is not None:
        mtype = "track"
    return dict(
        type=text_value(mtype), event=text_value(event),
        message_id=id_string(obj.get("messageId")), user_id=user_id, anonymous_id=anonymous_id,
        event_ts=event_ts, received_at=received_at, properties=properties, products=products,
        numbers=numbers, product_numbers=product_numbers,
    )


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _array_elements(text: str, i: int) -> list[tuple[int, int]]:
    """(start, end) offsets of the elements of the JSON array starting at text[i] == '['."""
    spans = []
    i = _skip_ws(text, i + 1)
    if text[i] == "]":
        return spans
    while True:
        _, end = _DECODER.raw_decode(text, i)
        spans.append((i, end))
        i = _skip_ws(text, end)
        if text[i] == "]":
            return spans
        if text[i] != ",":
            raise ValueError("bad array")
        i = _skip_ws(text, i + 1)


def _document_elements(lines: list[str]) -> list[tuple[int, str]] | None:
    """When the whole file is one JSON document: (line_number, raw) of each message, else None."""
    text = "\n".join(lines)
    start = _skip_ws(text, 0)
    if start >= len(text) or text[start] not in "[{":
        return None
    try:
        doc = loads_strict(text)
    except (ValueError, RecursionError):
        return None
    spans: list[tuple[int, int]]
    if isinstance(doc, list):
        spans = _array_elements(text, start)
    elif isinstance(doc, dict) and isinstance(doc.get("batch"), list):
        # find the offset of the batch array: walk the top-level keys
        i = _skip_ws(text, start + 1)
        spans = []
        while text[i] != "}":
            key, i = _DECODER.raw_decode(text, i)
            i = _skip_ws(text, _skip_ws(text, i) + 1)  # past ':'
            if key == "batch":
                spans = _array_elements(text, i)  # the last "batch" key wins, as in json
            _, i = _DECODER.raw_decode(text, i)
            i = _skip_ws(text, i)
            if text[i] == ",":
                i = _skip_ws(text, i + 1)
    elif isinstance(doc, dict):
        if sum(1 for line in lines if line.strip()) == 1:
            return None  # plain one-line NDJSON
        spans = [(start, len(text.rstrip()))]
    else:
        return None
    return [(text.count("\n", 0, s) + 1, text[s:e]) for s, e in spans]


@dataclass
class Loaded:
    messages: list[Message]  # every accepted message, in load order, duplicates included
    rejected: list[dict]
    lines_read: dict[str, int]


def load(lines_by_file: dict[str, list[str]]) -> Loaded:
    messages: list[Message] = []
    rejected: list[dict] = []
    lines_read: dict[str, int] = {}
    load_index = 0
    for source_file, raw_lines in lines_by_file.items():
        lines = [line.rstrip("\n").rstrip("\r") for line in raw_lines]
        items = _document_elements(lines)
        if items is None:
            items = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        lines_read[source_file] = len(items)
        for line_number, raw in items:
            try:
                if len(raw.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
                    raise Reject(f"larger than {MAX_MESSAGE_BYTES} bytes")
                try:
                    obj = loads_strict(raw)
                except ValueError as exc:
                    raise Reject(f"invalid JSON: {exc}") from None
                fields = _validate(obj)  # reads a `products` string into obj
                if depth(obj) > MAX_DEPTH:
                    raise Reject(f"nested more than {MAX_DEPTH} levels")
                if holds_nul(obj):
                    raise Reject("a string or key holds NUL")
            except RecursionError:  # json's parser: deeper than MAX_DEPTH for sure
                rejected.append(dict(source_file=source_file, line_number=line_number,
                                     raw=kept_raw(raw), reason="nested too deeply"))
                continue
            except Reject as exc:
                rejected.append(dict(source_file=source_file, line_number=line_number,
                                     raw=kept_raw(raw), reason=str(exc)))
                continue
            messages.append(Message(source_file=source_file, line_number=line_number,
                                    load_index=load_index, raw=raw, obj=obj, **fields))
            load_index += 1
    return Loaded(messages=messages, rejected=rejected, lines_read=lines_read)


def dedupe(messages: list[Message]) -> list[Message]:
    """Keep one copy per messageId: earliest receivedAt (none last), then load order.

    Messages without a messageId get a synthetic id and are only merged with byte-identical
    copies of themselves.
    """
    groups: dict[str, list[Message]] = {}
    for m in messages:
        key = "m:" + m.message_id if m.message_id is not None else "r:" + m.raw
        groups.setdefault(key, []).append(m)
    kept = []
    for key, copies in groups.items():
        best = min(copies, key=lambda m: (m.received_at is None,
                                          m.received_at or datetime.min, m.load_index))
        best.event_id = key[2:] if key.startswith("m:") else f"synthetic:{best.load_index}"
        kept.append(best)
    kept.sort(key=lambda m: m.load_index)
    return kept

