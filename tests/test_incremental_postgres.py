"""Delete+insert increments on PostgreSQL: loads built one after the other there give the
relations of one DuckDB build of them all, when a late copy moves an order to another user,
re-stitches anonymous messages and removes a view; and the marts were updated as increments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.compare import assert_same_across_engines, loaded_content
from support.project import FIXTURES, ProjectHarness, use_isolated_targets

from runner.context import Context

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.usefixtures("own_postgres_schemas")]


def _track(message_id: str, event: str, ts: str, received: str, **fields: Any) -> str:
    return json.dumps({"type": "track", "event": event, "messageId": message_id,
                       "timestamp": ts, "receivedAt": received, **fields})


TOYS = {"category": "Toys", "price": 10}
ORDER = {"order_id": "o1", "revenue": 10, "products": [{"category": "Toys", "price": 10}]}
LATE = [
    # the earliest copy of order o1 is user-b's: it leaves user-a, whose message is unchanged
    _track("view-b", "Product Viewed", "2026-03-02T09:00:00Z", "2026-03-02T09:00:01Z",
           userId="user-b", properties=TOYS),
    _track("order-b", "Order Completed", "2026-03-02T11:00:00Z", "2026-03-03T00:00:00Z",
           userId="user-b", properties=ORDER),
    # anon-x's view and page are stitched to user-x
    json.dumps({"type": "identify", "messageId": "link-x", "anonymousId": "anon-x",
                "userId": "user-x", "timestamp": "2026-03-05T00:00:00Z",
                "traits": {"email": "x@example.com"}}),
    # view-c's earliest copy is a Product Added: the view goes
    _track("view-c", "Product Added", "2026-03-02T10:30:00Z", "2026-03-02T10:30:00Z",
           userId="user-c", properties=TOYS),
]
FIRST = [
    _track("view-a", "Product Viewed", "2026-03-02T10:00:00Z", "2026-03-02T10:00:01Z",
           userId="user-a", properties=TOYS),
    _track("view-c", "Product Viewed", "2026-03-02T10:30:00Z", "2026-03-02T10:31:00Z",
           userId="user-c", properties=TOYS),
    _track("order-a", "Order Completed", "2026-03-02T12:00:00Z", "2026-03-02T12:00:01Z",
           userId="user-a", properties=ORDER),
    _track("view-x", "Product Viewed", "2026-03-02T08:00:00Z", "2026-03-02T08:00:01Z",
           anonymousId="anon-x", properties=TOYS),
    json.dumps({"type": "page", "messageId": "page-x", "anonymousId": "anon-x",
                "timestamp": "2026-03-02T08:01:00Z"}),
]


def test_postgres_increments_match_one_duckdb_build(tmp_path: Path) -> None:
    files = [FIXTURES / "multi_category.ndjson", tmp_path / "first.ndjson",
             tmp_path / "late.ndjson"]
    files[1].write_text("\n".join(FIRST) + "\n")
    files[2].write_text("\n".join(LATE) + "\n")
    whole = ProjectHarness(tmp_path / "whole")
    with Context(whole.root) as ctx:
        ctx.ingest(files)
        assert ctx.build().success
    split = ProjectHarness(tmp_path / "split")
    use_isolated_targets(split, "increments")
    for part in ([files[0], files[1]], [files[2]]):
        with Context(split.root, target="postgres") as ctx:
            ctx.ingest(part)
            result = ctx.build()
        assert result.success, [(r.model, r.error) for r in result.results if r.error]
    increments = {r.model for r in result.results
                  if str(r.compiled_path or "").endswith(".incremental.sql")}
    assert {"fct_orders", "fct_product_views", "derived_funnel_users", "cohort_non_converted",
            "dim_users", "derived_funnel_periods"} <= increments
    expected = loaded_content(whole, "duckdb")
    actual = loaded_content(split, "postgres")
    assert_same_across_engines(expected, actual, "postgres delete+insert")
    orders = [(o["order_id"], o["user_key"]) for o in actual["fct_orders"]]
    assert ("o1", "user-b") in orders
