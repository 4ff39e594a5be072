"""RFC 8259 in Python, for the few lines DuckDB's JSON functions would read otherwise: NaN,
Infinity and trailing commas (which DuckDB accepts), a repeated key (DuckDB takes its first value,
SPEC the last), a `products` string holding an array, and nesting past MAX_DEPTH."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

# JSON nested deeper is rejected, so that every engine reads what is loaded: Python's json
# stops near its recursion limit (1,000), Spark's Jackson at 1,000 levels, PostgreSQL's parser
# runs out of stack between 10,000 and 100,000
MAX_DEPTH = 512
WHITESPACE = " \t\n\r\f\v"  # a string of only these is missing, as an empty one
DEPTH_REASON = "JSON nested too deeply"  # more than MAX_DEPTH levels


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
