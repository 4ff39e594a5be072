"""One way to read the SPEC relations of a project and to say whether two readings are the same:
counts, keys and timestamps exactly, money and rates to 1e-9."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Collection
from typing import Any

from runner.context import Context

from .project import ProjectHarness

SPEC_KEYS = {
    "stg_events": "event_id",
    "fct_orders": "order_id",
    "fct_product_purchases": "order_id, line_number",
    "fct_product_views": "event_id",
    "dim_users": "user_key",
    "category_funnel": "category",
    "category_price_stats": "category",
    "category_opportunities": "category",
    "cohort_non_converted": "category, user_key",
    "arpu_timeseries": "grain, period_start, segment",
    "category_conversion_timeseries": "grain, period_start, segment, category",
    "experiment_results": "experiment, variant",
    "rejected_events": "source_file, line_number",
}
# what engines store differently (JSON text) or that says when and in which load a row came
ACROSS_ENGINES = frozenset({"properties", "traits", "loaded_at", "load_id", "updated_load"})
# bookkeeping that differs by construction between loading a stream in parts and at once
BOOKKEEPING = frozenset({"load_id", "record_number", "updated_load", "loaded_at"})
WHERE_LOADED = frozenset({"source_file", "line_number"})  # of stg_events: which file, which line

Relations = dict[str, list[Any]]


def relations(project: ProjectHarness, target: str = "duckdb") -> Relations:
    """Every SPEC relation of `target`, rows ordered by the relation's key."""
    with Context(project.root, target=target) as ctx:
        return {name: ctx.rows(name, order_by=key) for name, key in SPEC_KEYS.items()}


def content(rels: Relations) -> Relations:
    """`rels` as content only, for comparing a stream loaded in parts with one load: the
    bookkeeping of which load a row came from dropped (and of stg_events, which file and line),
    rejected lines as (raw, reason), rows sorted by key."""
    out: Relations = {}
    for name, rows in rels.items():
        if name == "rejected_events":
            out[name] = sorted((r["raw"], r["reason"]) for r in rows)
            continue
        keys = [k.strip() for k in SPEC_KEYS[name].split(",")]
        drop = BOOKKEEPING | (WHERE_LOADED if name == "stg_events" else set())
        cleaned = [{k: v for k, v in r.items() if k not in drop} for r in rows]
        out[name] = sorted(cleaned, key=lambda r: json.dumps([r[k] for k in keys], default=str))
    return out


def loaded_content(project: ProjectHarness, target: str = "duckdb") -> Relations:
    """The relations of `target` as content only (`content`)."""
    return content(relations(project, target))


def plain(value: Any) -> Any:
    """A value as Python compares it across engines: decimals as floats, times as naive UTC
    (ClickHouse's DateTime64 has a zone), a day as its midnight."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return value


def same(a: Any, b: Any) -> bool:
    """Counts, keys and times exactly; money and rates (a float on either side) to 1e-9."""
    a, b = plain(a), plain(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def assert_same(expected: Relations, actual: Relations, label: str,
                only: Collection[str] | None = None, ignore: Collection[str] = (),
                context: str = "") -> None:
    """Row for row, in order, the same columns; columns in `ignore` are not compared, and
    `context` (the input that gave these relations) ends every message."""
    for name in sorted(only or SPEC_KEYS):
        left, right = expected[name], actual[name]
        assert len(left) == len(right), (
            f"{label}: {name} has {len(right)} rows, not {len(left)}\n{context}")
        for row_a, row_b in zip(left, right, strict=True):
            if not isinstance(row_a, dict):
                assert row_a == row_b, f"{label}: {name}: {row_b} != {row_a}\n{context}"
                continue
            if row_a == row_b:  # equal values are the same (`same` would say so, slower)
                continue
            extra = set(row_b).difference(row_a, ignore)
            assert not extra, f"{label}: {name} has columns {sorted(extra)} too\n{context}"
            for column, value in row_a.items():
                if column in ignore:
                    continue
                assert column in row_b, f"{label}: {name}.{column} missing\n{context}"
                assert same(value, row_b[column]), (
                    f"{label}: {name}.{column}: {value!r} != {row_b[column]!r} in {row_a}\n"
                    f"{context}")


def assert_same_across_engines(expected: Relations, actual: Relations, engine: str,
                               only: Collection[str] | None = None) -> None:
    """DuckDB's relations and `engine`'s: the same but for JSON text and load bookkeeping."""
    assert_same(expected, actual, engine, only=only, ignore=ACROSS_ENGINES)
