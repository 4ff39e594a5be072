"""Incremental builds: ingesting a stream in parts with a build after each part gives exactly
the relations of one build of the whole stream (late events and duplicates across parts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import SPEC_KEYS, ProjectHarness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reference_diff import streams

from runner.context import Context

# bookkeeping that differs by construction between a split and a whole load
BOOKKEEPING = {"load_id", "record_number", "updated_load", "loaded_at"}
WHERE_LOADED = {"source_file", "line_number"}  # of stg_events: which part file, which line


def snapshot(project: ProjectHarness) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
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


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


def assert_equal(whole: dict[str, list[Any]], split: dict[str, list[Any]], context: str) -> None:
    for name in SPEC_KEYS:
        left, right = whole[name], split[name]
        assert len(left) == len(right), f"{name}: {len(right)} rows, not {len(left)}\n{context}"
        for a, b in zip(left, right, strict=True):
            if isinstance(a, dict):
                bad = {k: (a[k], b.get(k)) for k in a if not _close(a[k], b.get(k))}
                assert not bad, f"{name}: {bad}\n{context}"
            else:
                assert a == b, f"{name}: {a} != {b}\n{context}"


def build_in_parts(project: ProjectHarness, parts: list[list[str]], folder: Path,
                   **vars: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts):
        path = folder / f"part{i}.ndjson"
        path.write_text("\n".join(part) + "\n")
        if part:
            project.ingest(path)
        assert project.build(**vars).success


@pytest.mark.slow
@settings(max_examples=15, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(stream=streams(), cuts=st.lists(st.floats(0, 1), min_size=1, max_size=3))
def test_split_ingest_equals_one_build(tmp_path_factory: pytest.TempPathFactory,
                                       stream: Any, cuts: list[float]) -> None:
    lines, vars, _ = stream
    folder = tmp_path_factory.mktemp("split")
    positions = sorted({int(c * len(lines)) for c in cuts})
    parts = [lines[a:b] for a, b in zip([0, *positions], [*positions, len(lines)], strict=True)]
    whole = ProjectHarness(folder / "whole")
    build_in_parts(whole, [lines], folder / "whole")
    split = ProjectHarness(folder / "split")
    build_in_parts(split, parts, folder / "split")
    context = f"parts at {positions}\n" + "\n".join(lines)
    assert_equal(snapshot(whole), snapshot(split), context)


def _message(message_id: str, event: str, ts: str, received: str, **fields: Any) -> str:
    return json.dumps({"type": "track", "event": event, "messageId": message_id,
                       "timestamp": ts, "receivedAt": received, **fields})


def _order(order_id: str, price: float) -> dict[str, Any]:
    return {"order_id": order_id, "revenue": price,
            "products": [{"category": "Toys", "price": price}]}


def test_late_duplicate_and_late_identity(tmp_path: Path) -> None:
    """A duplicate with an earlier receivedAt arriving later replaces the copy already built; an
    order keeps its earliest Order Completed across loads; an identify arriving later stitches
    events built before it."""
    first = [
        _message("m1", "Product Viewed", "2026-03-02T10:00:00Z", "2026-03-02T10:05:00Z",
                 anonymousId="anon-1", properties={"category": "Toys", "price": 10}),
        _message("o1-b", "Order Completed", "2026-03-02T12:00:00Z", "2026-03-02T12:00:01Z",
                 anonymousId="anon-1", properties=_order("o1", 20)),
    ]
    second = [
        # the same message m1, received earlier: this copy wins (its price differs)
        _message("m1", "Product Viewed", "2026-03-02T10:00:00Z", "2026-03-02T10:01:00Z",
                 anonymousId="anon-1", properties={"category": "Toys", "price": 11}),
        # an earlier Order Completed of o1 arrives late: it counts
        _message("o1-a", "Order Completed", "2026-03-02T11:00:00Z", "2026-03-03T00:00:00Z",
                 anonymousId="anon-1", properties=_order("o1", 15)),
        json.dumps({"type": "identify", "messageId": "i1", "userId": "user-1",
                    "anonymousId": "anon-1", "timestamp": "2026-03-05T00:00:00Z",
                    "traits": {"email": "u1@example.com"}}),
    ]
    split = ProjectHarness(tmp_path / "split")
    build_in_parts(split, [first, second], tmp_path)
    views = split.rows("fct_product_views")
    assert [(v["event_id"], v["price"], v["user_key"]) for v in views] == [("m1", 11.0, "user-1")]
    orders = split.rows("fct_orders")
    assert [(o["order_id"], o["revenue"], o["user_key"], o["event_id"]) for o in orders] == [
        ("o1", 15.0, "user-1", "o1-a")]
    lines = split.rows("fct_product_purchases")
    assert [(x["order_id"], x["price"]) for x in lines] == [("o1", 15.0)]
    whole = ProjectHarness(tmp_path / "whole")
    build_in_parts(whole, [first + second], tmp_path / "w")
    assert_equal(snapshot(whole), snapshot(split), "late duplicate")


def test_full_refresh_rebuilds_from_all_loads(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "p", with_sample=True)
    assert project.build().success
    first_build = len(project.rows("fct_product_views"))
    assert first_build > 0
    with Context(project.root) as ctx:
        assert ctx.reader().watermark("stg_events") == 1  # the sample is load 1
    # lose part of the incremental state (published with its watermark): an increment has
    # nothing new to process ...
    with duckdb.connect(str(project.root / "arpu.duckdb")) as con:
        con.execute("delete from stg_events where event_name = 'Product Viewed'")
    with Context(project.root) as ctx:
        result = ctx.build(["stg_events"], validate=False)
        assert result.success and result.results[0].rows == 0
        result = ctx.build(["stg_events"])  # the gate notices: messages were lost
        assert not result.success and "stg_events" in str(result.results[0].error)
        # ... a full refresh rebuilds from every load
        result = ctx.build(full_refresh=True)
    assert result.success
    assert len(project.rows("fct_product_views")) == first_build  # as after the first build
