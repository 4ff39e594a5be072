"""The reference implementation behind the same small interface as the `arpu_project` fixture,
and the row-by-row comparison of two sets of relations."""

from __future__ import annotations

import gzip
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .ingest import load
from .spec_impl import RELATIONS, compute

# SPEC section 2 required columns (loaded_at and properties are compared separately / not at all)
COLUMNS: dict[str, tuple[str, ...]] = {
    "stg_events": ("event_id", "event_name", "user_key", "user_id", "anonymous_id", "event_ts",
                   "received_at"),
    "fct_orders": ("order_id", "user_key", "ordered_at", "revenue", "currency", "product_count"),
    "fct_product_purchases": ("order_id", "line_number", "user_key", "purchased_at", "product_id",
                              "sku", "category", "name", "price", "quantity", "line_revenue"),
    "fct_product_views": ("event_id", "user_key", "viewed_at", "product_id", "category", "price"),
    "dim_users": ("user_key", "first_seen_at", "last_seen_at", "email", "phone"),
    "category_funnel": ("category", "viewers", "purchasers", "conversion_rate",
                        "median_time_to_convert_s"),
    "category_price_stats": ("category", "purchased_lines", "orders", "units", "revenue",
                             "avg_item_price", "avg_unit_price", "order_rank"),
    "category_opportunities": ("category", "conversion_rate", "avg_item_price", "viewers",
                               "non_converted", "revenue_at_stake", "low_conversion",
                               "high_price", "rank"),
    "cohort_non_converted": ("category", "user_key", "first_viewed_at", "last_viewed_at", "views",
                             "email", "phone"),
    "arpu_timeseries": ("grain", "period_start", "segment", "revenue", "active_users",
                        "purchasers", "arpu", "arppu"),
    "category_conversion_timeseries": ("grain", "period_start", "segment", "category", "viewers",
                                       "purchasers", "conversion_rate"),
    "experiment_results": ("experiment", "variant", "is_control", "users", "excluded_users",
                           "purchasers", "conversion_rate", "revenue", "arpu", "arpu_uplift",
                           "arpu_p_value", "conversion_p_value", "arpu_ci_low", "arpu_ci_high"),
    "rejected_events": ("source_file", "line_number", "raw"),
}
KEYS: dict[str, tuple[str, ...]] = {
    "stg_events": ("event_id",),
    "fct_orders": ("order_id",),
    "fct_product_purchases": ("order_id", "line_number"),
    "fct_product_views": ("event_id",),
    "dim_users": ("user_key",),
    "category_funnel": ("category",),
    "category_price_stats": ("category",),
    "category_opportunities": ("category",),
    "cohort_non_converted": ("category", "user_key"),
    "arpu_timeseries": ("grain", "period_start", "segment"),
    "category_conversion_timeseries": ("grain", "period_start", "segment", "category"),
    "experiment_results": ("experiment", "variant"),
    "rejected_events": ("source_file", "line_number"),
}
P_VALUE_COLUMNS = ("arpu_p_value", "conversion_p_value", "arpu_ci_low", "arpu_ci_high")
assert set(COLUMNS) == set(RELATIONS) == set(KEYS)


def read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8").split("\n")


@dataclass
class Counts:
    lines_read: int
    loaded: int
    rejected: int


@dataclass
class Built:
    success: bool


def _sort_key(row: dict, columns: list[str]) -> tuple:
    # SQL ORDER BY with NULLS LAST
    return tuple((row[c] is None, row[c] if row[c] is not None else 0) for c in columns)


class ReferenceProject:
    """`arpu_project`'s interface (ingest / build / rows) over the reference implementation."""

    def __init__(self) -> None:
        self.files: dict[str, list[str]] = {}
        self.result: dict[str, list[dict]] | None = None

    def ingest(self, *paths: Path | str) -> Counts:
        total = Counts(0, 0, 0)
        for p in paths:
            lines = read_lines(Path(p))
            self.files[str(p)] = lines
            loaded = load({str(p): lines})
            total.lines_read += sum(loaded.lines_read.values())
            total.loaded += len(loaded.messages)
            total.rejected += len(loaded.rejected)
        return total

    def build(self, **vars: Any) -> Built:
        self.result = compute(self.files, vars)
        return Built(success=True)

    def rows(self, relation: str, order_by: str | None = None) -> list[dict]:
        assert self.result is not None, "build() first"
        rows = [dict(r) for r in self.result[relation]]
        if order_by:
            columns = [c.strip() for c in order_by.split(",")]
            rows.sort(key=lambda r: _sort_key(r, columns))
        return rows


# ---------------------------------------------------------------- comparison


def normalize(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


def _key(relation: str, row: dict) -> tuple:
    key = []
    for c in KEYS[relation]:
        v = normalize(row[c])
        if c == "source_file":
            v = Path(str(v)).name
        if c == "period_start" and isinstance(v, datetime):
            v = v.date()
        key.append(v)
    return tuple(key)


def same_value(column: str, a: Any, b: Any, rel: float = 1e-9) -> bool:
    a, b = normalize(a), normalize(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b) and isinstance(a, (bool, int)) and isinstance(b, (bool, int))
    if isinstance(a, datetime) or isinstance(b, datetime):
        if isinstance(a, datetime) and isinstance(b, datetime):
            return a == b
        if isinstance(a, date) and isinstance(b, date):  # a date column read back as datetime
            return (a.date() if isinstance(a, datetime) else a) == (
                b.date() if isinstance(b, datetime) else b) and column == "period_start"
        return False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        tol = 1e-6 if column in P_VALUE_COLUMNS else rel
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if column == "source_file":
        return Path(str(a)).name == Path(str(b)).name
    return a == b


_MESSAGE_ID = re.compile(r'"messageId"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(-?\d+))')


def message_ids(lines_by_file: dict[str, list[str]]) -> set[str]:
    """Every messageId written in the input, accepted or not (a generous textual scan)."""
    found = set()
    for lines in lines_by_file.values():
        for m in _MESSAGE_ID.finditer("\n".join(lines)):
            found.add(m.group(1) if m.group(1) is not None else m.group(2))
    return found


def diff_relation(relation: str, product: list[dict], reference: list[dict],
                  real_ids: set[str] | None = None) -> list[str]:
    """Human-readable differences between two versions of one relation (empty when equal).

    With `real_ids` (the input's messageIds), stg_events rows of messages without a messageId
    are compared without their event_id, which each implementation invents its own way.
    """
    problems: list[str] = []
    columns = COLUMNS[relation]
    if real_ids is not None and relation == "stg_events":
        real = real_ids
        cols = [c for c in columns if c != "event_id"]

        def strip(rows: list[dict]) -> list[tuple]:
            return sorted(tuple(repr(normalize(r[c])) for c in cols) for r in rows
                           if r["event_id"] not in real)
        if strip(product) != strip(reference):
            problems.append(f"{relation}: messages without messageId differ:\n"
                            f"  product   {strip(product)}\n  reference {strip(reference)}")
        product = [r for r in product if r["event_id"] in real]
        reference = [r for r in reference if r["event_id"] in real]
    p_rows = {_key(relation, r): r for r in product}
    r_rows = {_key(relation, r): r for r in reference}
    if len(p_rows) != len(product):
        problems.append(f"{relation}: duplicate keys in the product ({len(product)} rows, "
                        f"{len(p_rows)} keys)")
    for k in sorted(set(r_rows) - set(p_rows), key=repr):
        problems.append(f"{relation}: missing row {k}: {_show(r_rows[k], columns)}")
    for k in sorted(set(p_rows) - set(r_rows), key=repr):
        problems.append(f"{relation}: extra row {k}: {_show(p_rows[k], columns)}")
    for k in sorted(set(p_rows) & set(r_rows), key=repr):
        p, r = p_rows[k], r_rows[k]
        for c in columns:
            if c not in p:
                problems.append(f"{relation}: column {c} missing")
                continue
            if not same_value(c, p[c], r[c]):
                problems.append(f"{relation} {k}: {c} product={p[c]!r} reference={r[c]!r}")
    return problems


def _show(row: dict, columns: tuple[str, ...]) -> str:
    return ", ".join(f"{c}={row.get(c)!r}" for c in columns)
