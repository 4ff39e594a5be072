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


def without_provenance(rels: Relations) -> Relations:
    """`rels` without which load and line a message came from, which differ between one load
    and several: stg_events loses its bookkeeping, rejected_events is ordered by content."""
    for row in rels["stg_events"]:
        for column in ("source_file", "line_number", "record_number"):
            row.pop(column, None)
    rels["rejected_events"].sort(key=lambda r: (r["raw"], r["reason"]))
    for row in rels["rejected_events"]:
        row.pop("line_number", None)
    return rels


def loaded_content(project: ProjectHarness) -> Relations:
    """The relations as content only, for comparing a stream loaded in parts with one load:
    bookkeeping dropped, rejected lines as (raw, reason), rows sorted by key."""
    out: Relations = {}
    with Context(project.root) as ctx:
        for name, key in SPEC_KEYS.items():
            rows = ctx.rows(name)
            if name == "rejected_events":
                out[name] = sorted((r["raw"], r["reason"]) for r in rows)
                continue
            keys = [k.strip() for k in key.split(",")]
            drop = BOOKKEEPING | (WHERE_LOADED if name == "stg_events" else set())
            cleaned = [{k: v for k, v in r.items() if k not in drop} for r in rows]
            out[name] = sorted(cleaned, key=lambda r: json.dumps([r[k] for k in keys],
                                                                 default=str))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):  # as UTC, naive (ClickHouse's DateTime64 has a zone)
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None)
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)  # money and rates
    return bool(a == b)  # counts, keys and timestamps exactly


def assert_same(expected: Relations, actual: Relations, label: str,
                only: Collection[str] | None = None, ignore: Collection[str] = (),
                context: str = "") -> None:
    """Row for row, in order; columns in `ignore` are not compared, and `context` (the input
    that gave these relations) ends every message."""
    for name in sorted(only or SPEC_KEYS):
        left, right = expected[name], actual[name]
        assert len(left) == len(right), (
            f"{label}: {name} has {len(right)} rows, not {len(left)}\n{context}")
        for row_a, row_b in zip(left, right, strict=True):
            if not isinstance(row_a, dict):
                assert row_a == row_b, f"{label}: {name}: {row_b} != {row_a}\n{context}"
                continue
            for column, value in row_a.items():
                if column in ignore:
                    continue
                assert column in row_b, f"{label}: {name}.{column} missing\n{context}"
                assert _same(value, row_b[column]), (
                    f"{label}: {name}.{column}: {value!r} != {row_b[column]!r} in {row_a}\n"
                    f"{context}")


def assert_same_across_engines(expected: Relations, actual: Relations, engine: str,
                               only: Collection[str] | None = None) -> None:
    """DuckDB's relations and `engine`'s: the same but for JSON text and load bookkeeping."""
    assert_same(expected, actual, engine, only=only, ignore=ACROSS_ENGINES)
