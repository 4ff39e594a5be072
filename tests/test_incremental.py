"""Incremental builds: ingesting a stream in parts with a build after each part gives exactly
the relations of one build of the whole stream (late events and duplicates across parts, and
late copies that win their message and carry other content)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.built import Built
from support.compare import BOOKKEEPING, WHERE_LOADED, assert_same, loaded_content
from support.project import ROOT, ProjectHarness
from support.streams import streams

from runner.context import Context
from runner.project import load_models

# which load, line or build a row came from, and what it was before: differ by construction
# between a stream loaded in parts and at once
PROVENANCE = BOOKKEEPING | WHERE_LOADED | {"previous_user_key"}
STATE = ("arpu_watermarks", "arpu_build_info")


def every_relation(project: ProjectHarness) -> dict[str, list[Any]]:
    """Every table of the published file, SPEC or not (int_*, derived_*: the state that
    delete+insert models continue from), as content: provenance dropped, rows sorted."""
    out: dict[str, list[Any]] = {}
    with duckdb.connect(str(project.root / "arpu.duckdb"), read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from duckdb_tables() order by 1").fetchall()]
        for table in tables:
            if table in STATE:
                continue
            cur = con.execute(f'select * from "{table}"')
            names = [d[0] for d in cur.description]
            rows = [{k: v for k, v in zip(names, row, strict=True) if k not in PROVENANCE}
                    for row in cur.fetchall()]
            out[table] = sorted(rows, key=_sort_key)
    return out


def _sort_key(row: dict[str, Any]) -> str:
    """Rows in an order that float sums added up in another order do not change."""
    return json.dumps([v for v in row.values() if not isinstance(v, float)], default=str)


def assert_split_is_whole(whole: ProjectHarness, split: ProjectHarness, context: str) -> None:
    assert_same(loaded_content(whole), loaded_content(split), "split vs whole", context=context)
    expected, actual = every_relation(whole), every_relation(split)
    assert sorted(actual) == sorted(expected), context
    assert_same(expected, actual, "split vs whole", only=sorted(expected), context=context)


def continued(project: ProjectHarness) -> set[str]:
    """The incremental models the project's last build ran as increments."""
    results = json.loads((project.root / "target" / "run_results.json").read_text())
    return {r["model"] for r in results["results"]
            if str(r.get("compiled_path") or "").endswith(".incremental.sql")}


def delete_insert_models() -> set[str]:
    return {name for name, model in load_models(ROOT / "models").items()
            if model.config.incremental_strategy == "delete+insert"}


def build_in_parts(project: ProjectHarness, parts: list[list[str]], folder: Path,
                   **vars: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts):
        path = folder / f"part{i}.ndjson"
        path.write_text("\n".join(part) + "\n")
        if part:
            project.ingest(path)
        assert project.build(**vars).success


def _messages_with_ids(lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    found = []
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("messageId"):
            found.append((i, obj))
    return found


@st.composite
def streams_with_late_winners(draw: Any) -> tuple[list[str], dict, bool]:
    """streams(), plus copies of some messages further down the stream (so often in a later
    part) that were received earlier than any other copy, so they win their messageId, and
    that carry other content: another order_id or revenue, a lost userId, another event."""
    lines, vars, twice = draw(streams())
    lines = list(lines)
    # a var naming a value the data does not have fails the build (SPEC section 3), and the
    # first parts may lack the value the whole has: vars naming data stay out of this test
    vars = {k: v for k, v in vars.items() if k not in ("target_category", "control_variant")}
    for n in range(draw(st.integers(1, 4))):
        candidates = _messages_with_ids(lines)
        # mostly the messages whose content decides more than their own row
        telling = [(i, m) for i, m in candidates if m.get("event") == "Order Completed"
                   or (m.get("userId") and m.get("anonymousId"))]
        if telling and draw(st.integers(0, 2)) > 0:
            candidates = telling
        if not candidates:
            break
        i, copy = draw(st.sampled_from(candidates))
        # before every receivedAt of streams() (from 2026-02-20), later copies win over earlier
        # ones with a later n
        copy["receivedAt"] = f"2026-02-{10 - n:02d}T00:00:00.000Z"
        properties = dict(copy.get("properties") or {})
        if copy.get("event") == "Order Completed":
            if draw(st.booleans()):
                properties["order_id"] = draw(st.sampled_from(["o0", "o1", "o2", "o-moved"]))
            if draw(st.booleans()):
                properties["revenue"] = draw(st.sampled_from([0, 99, "12.5"]))
            if draw(st.booleans()):
                properties["products"] = []
        if copy.get("event") == "Product Viewed" and draw(st.booleans()):
            properties["category"] = draw(st.sampled_from(["Books", "Toys"]))
        if copy.get("userId") and copy.get("anonymousId") and draw(st.booleans()):
            del copy["userId"]  # the winning copy lost its userId
        if copy.get("anonymousId") and draw(st.integers(0, 3)) == 0:
            copy["anonymousId"] = draw(st.sampled_from(["a0", "a1", "a-moved"]))
        if copy.get("type", "track") == "track" and draw(st.integers(0, 3)) == 0:
            copy["event"] = draw(st.sampled_from(["Product Viewed", "Order Completed",
                                                  "Product Added"]))
        if properties:
            copy["properties"] = properties
        # often at the end, so that it lands in a later part than the copy it replaces
        at = len(lines) if draw(st.booleans()) else draw(st.integers(i + 1, len(lines)))
        lines.insert(at, json.dumps(copy))
    return lines, vars, twice


@pytest.mark.slow
@settings(max_examples=15, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(stream=streams_with_late_winners(),
       cuts=st.lists(st.floats(0, 1), min_size=1, max_size=3))
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
    assert_split_is_whole(whole, split, context)
    if sum(1 for part in parts if part) > 1:  # the last build continued from the one before
        assert continued(split) == delete_insert_models() | {"stg_events"}, context


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
    assert_split_is_whole(whole, split, "late duplicate")


def build_split_and_whole(tmp_path: Path, first: list[str], second: list[str]
                          ) -> ProjectHarness:
    """The two loads built one after the other, checked equal to one build of both."""
    split = ProjectHarness(tmp_path / "split")
    build_in_parts(split, [first, second], tmp_path / "s")
    whole = ProjectHarness(tmp_path / "whole")
    build_in_parts(whole, [first + second], tmp_path / "w")
    assert_split_is_whole(whole, split, "\n".join(first + ["--"] + second))
    return split


def test_late_winning_copy_with_another_order(tmp_path: Path) -> None:
    """A copy of a message that arrives in a later load but was received earlier wins, and
    here carries another order: the order the first copy carried has no message left."""
    first = [_message("dup-order", "Order Completed", "2026-03-02T12:00:00Z",
                      "2026-03-03T00:00:00Z", userId="buyer", properties=_order("o1", 20))]
    second = [_message("dup-order", "Order Completed", "2026-03-02T12:00:00Z",
                       "2026-03-02T12:00:01Z", userId="buyer", properties=_order("o1-other", 99))]
    split = build_split_and_whole(tmp_path, first, second)
    assert [(o["order_id"], o["revenue"]) for o in split.rows("fct_orders")] == [
        ("o1-other", 99.0)]
    assert [(x["order_id"], x["price"]) for x in split.rows("fct_product_purchases")] == [
        ("o1-other", 99.0)]
    day = [r for r in split.rows("arpu_timeseries") if r["grain"] == "day"
           and r["segment"] == "all"]
    assert [(r["revenue"], r["purchasers"]) for r in day] == [(99.0, 1)]


def test_earlier_copy_of_an_order_from_another_user(tmp_path: Path) -> None:
    """An order's earliest Order Completed arrives late from another user: the order, its
    lines and its revenue move to that user, and the first buyer, whose message did not
    change, no longer converted (their funnel, cohort and periods are recomputed too)."""
    toys = {"category": "Toys", "price": 10}
    first = [
        _message("view-a", "Product Viewed", "2026-03-02T10:00:00Z", "2026-03-02T10:00:01Z",
                 userId="user-a", properties=toys),
        _message("order-a", "Order Completed", "2026-03-02T12:00:00Z", "2026-03-02T12:00:01Z",
                 userId="user-a", properties=_order("o1", 10)),
    ]
    second = [
        _message("view-b", "Product Viewed", "2026-03-02T09:00:00Z", "2026-03-02T09:00:01Z",
                 userId="user-b", properties=toys),
        _message("order-b", "Order Completed", "2026-03-02T11:00:00Z", "2026-03-03T00:00:00Z",
                 userId="user-b", properties=_order("o1", 10)),
    ]
    split = build_split_and_whole(tmp_path, first, second)
    assert [(o["order_id"], o["user_key"]) for o in split.rows("fct_orders")] == [("o1", "user-b")]
    assert [(c["category"], c["user_key"]) for c in split.rows("cohort_non_converted")] == [
        ("Toys", "user-a")]
    assert continued(split) == delete_insert_models() | {"stg_events"}


def test_late_winning_copy_without_user_id(tmp_path: Path) -> None:
    """The winning copy of the only identify linking anon-x to user-x lost its userId: the
    anonymous events of anon-x, stitched to user-x by the first build, are anon-x's again."""
    first = [
        json.dumps({"type": "identify", "messageId": "link", "anonymousId": "anon-x",
                    "userId": "user-x", "timestamp": "2026-03-01T00:00:00Z",
                    "receivedAt": "2026-03-03T00:00:00Z"}),
        json.dumps({"type": "page", "messageId": "visit", "anonymousId": "anon-x",
                    "timestamp": "2026-03-02T00:00:00Z"}),
    ]
    second = [json.dumps({"type": "identify", "messageId": "link", "anonymousId": "anon-x",
                          "timestamp": "2026-03-01T00:00:00Z",
                          "receivedAt": "2026-03-01T00:00:01Z"})]
    split = build_split_and_whole(tmp_path, first, second)
    assert {e["event_id"]: e["user_key"] for e in split.rows("stg_events")} == {
        "link": "anon-x", "visit": "anon-x"}
    assert [u["user_key"] for u in split.rows("dim_users")] == ["anon-x"]


def test_late_winning_copy_of_another_event(tmp_path: Path) -> None:
    """The winning copy of a Product Viewed message is a Product Added: no view is left."""
    props = {"product_id": "p1", "category": "Toys", "price": 10}
    first = [_message("m-view", "Product Viewed", "2026-03-02T10:00:00Z",
                      "2026-03-03T00:00:00Z", userId="viewer", properties=props)]
    second = [_message("m-view", "Product Added", "2026-03-02T10:00:00Z",
                       "2026-03-02T10:00:01Z", userId="viewer", properties=props)]
    split = build_split_and_whole(tmp_path, first, second)
    assert split.rows("fct_product_views") == []
    assert split.rows("category_funnel") == []


def test_full_refresh_rebuilds_from_all_loads(sample_built_by_context: Built,
                                              tmp_path: Path) -> None:
    assert sample_built_by_context.outcome.success
    project = sample_built_by_context.copy(tmp_path / "p")
    first_build = len(project.rows("fct_product_views"))
    assert first_build > 0
    with Context(project.root) as ctx:
        assert ctx.reader().watermarks()["stg_events"] == 1  # the sample is load 1
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
