"""Every SPEC definition pinned at its edges, on small hand-made fixtures.

Each expected number is worked out by hand (the comment says why). Every test runs twice: on
the product (the `arpu_project` fixture from conftest.py: a fresh project in a temp dir) and on
the plain-Python reference implementation in `tests/reference/`, so a failure on one side only
says which of the two disagrees with the hand computation.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path

import pytest
from scipy.stats import norm

try:
    from tests.reference import experiment_fixture
    from tests.reference.harness import ReferenceProject
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from reference import experiment_fixture  # type: ignore[no-redef]
    from reference.harness import ReferenceProject  # type: ignore[no-redef]

FIXTURES = Path(__file__).parent / "fixtures"
Z = 1.959964
approx = pytest.approx


@pytest.fixture(params=["reference", "product"])
def impl(request):
    """The implementation under test: the reference or the product, same interface."""
    if request.param == "reference":
        return ReferenceProject()
    return request.getfixturevalue("arpu_project")


def build(impl, *fixtures: str, **vars):
    """Ingest the fixtures, build with vars, return the ingest results."""
    results = [impl.ingest(FIXTURES / name) for name in fixtures]
    assert impl.build(**vars).success
    return results


def by_key(rows: list[dict], *columns: str) -> dict:
    if len(columns) == 1:
        return {r[columns[0]]: r for r in rows}
    return {tuple(r[c] for c in columns): r for r in rows}


def day(value: str) -> date:
    return date.fromisoformat(value)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def arpu_rows(impl, segment: str = "all", grain: str | None = None) -> dict:
    rows = impl.rows("arpu_timeseries", order_by="grain, period_start, segment")
    return {(r["grain"], _as_date(r["period_start"])): r for r in rows
            if r["segment"] == segment and (grain is None or r["grain"] == grain)}


def _as_date(value) -> date:
    return value.date() if isinstance(value, datetime) else value


def check_arpu(row: dict, active: int, revenue: float, purchasers: int) -> None:
    assert row["active_users"] == active
    assert row["revenue"] == approx(revenue)
    assert row["purchasers"] == purchasers
    assert row["arpu"] == approx(revenue / active)
    assert row["arppu"] == (approx(revenue / purchasers) if purchasers else None)


# ---------------------------------------------------------------- section 1: input


def test_event_time_fallback_and_offsets(impl):
    (res,) = build(impl, "event_time.ndjson")
    assert (res.lines_read, res.loaded, res.rejected) == (5, 5, 0)
    events = by_key(impl.rows("stg_events"), "event_id")
    # timestamp wins over originalTimestamp/receivedAt; +02:00 -> 08:00 UTC
    assert events["t-offset"]["event_ts"] == ts("2026-03-01T08:00:00")
    assert events["t-offset"]["received_at"] == ts("2026-03-01T12:00:00")
    # no timestamp: originalTimestamp 23:30-05:00 is 04:30 UTC on the next day
    assert events["t-original"]["event_ts"] == ts("2026-03-02T04:30:00")
    # timestamp null, no originalTimestamp: receivedAt, milliseconds kept
    assert events["t-received"]["event_ts"] == ts("2026-03-01T05:06:07.123000")
    assert events["t-fraction"]["event_ts"] == ts("2026-03-01T10:00:00.500000")
    # a half-hour offset: 10:00+05:30 is 04:30 UTC
    assert events["t-halfhour"]["event_ts"] == ts("2026-03-01T04:30:00")
    days = arpu_rows(impl, grain="day")
    # u2's local evening lands on 03-02 in UTC; the other four are active on 03-01
    assert days[("day", day("2026-03-01"))]["active_users"] == 4
    assert days[("day", day("2026-03-02"))]["active_users"] == 1


def test_numeric_strings_are_parsed(impl):
    build(impl, "numeric_strings.ndjson")
    orders = by_key(impl.rows("fct_orders"), "order_id")
    assert orders["o1"]["revenue"] == approx(12.5)  # "12.50"
    assert orders["o2"]["revenue"] == approx(7.0)  # no revenue: total "\t7\n" (trimmed)
    lines = by_key(impl.rows("fct_product_purchases"), "order_id", "line_number")
    # ("10", " 2 ") -> 10 x 2; ("2.5", absent) -> 2.5 x 1; ("1e1", "3") -> 10 x 3
    assert [(lines[("o1", i)]["price"], lines[("o1", i)]["quantity"],
             lines[("o1", i)]["line_revenue"]) for i in (1, 2, 3)] == [
        approx((10, 2, 20)), approx((2.5, 1, 2.5)), approx((10, 3, 30))]
    (view,) = impl.rows("fct_product_views")
    assert view["price"] == approx(3.25)  # "3.25" and a VT and CR: whitespace is trimmed
    stats = by_key(impl.rows("category_price_stats"), "category")
    games = stats["Games"]
    assert (games["purchased_lines"], games["orders"], games["order_rank"]) == (3, 1, 1)
    assert games["units"] == approx(6)  # 2 + 1 + 3
    assert games["revenue"] == approx(52.5)  # 20 + 2.5 + 30
    assert games["avg_item_price"] == approx(7.5)  # (10 + 2.5 + 10) / 3
    assert games["avg_unit_price"] == approx(8.75)  # 52.5 / 6
    assert stats["Books"]["order_rank"] == 2


def test_dedupe_by_message_id(impl):
    (res,) = build(impl, "dedupe_messages.ndjson")
    assert (res.lines_read, res.loaded, res.rejected) == (10, 10, 0)
    events = impl.rows("stg_events")
    # m1, m2, m3 once each; of the four id-less pages the two byte-identical ones are one, the
    # others differ (by a second, by a receivedAt): 3 + 3
    assert len(events) == 6
    assert sorted(e["event_id"] for e in events if e["event_id"] in ("m1", "m2", "m3")) == [
        "m1", "m2", "m3"]
    views = by_key(impl.rows("fct_product_views"), "event_id")
    # m1: the copy with the earliest receivedAt (10:00:01, the second line) is kept
    assert views["m1"]["product_id"] == "p-early"
    assert views["m1"]["viewed_at"] == ts("2026-03-02T09:00:00")
    # m2: a copy without receivedAt comes after one with it
    assert views["m2"]["product_id"] == "p-received"
    # m3: same receivedAt: load order, the first line
    assert views["m3"]["product_id"] == "p-first"
    received = by_key(events, "event_id")["m1"]["received_at"]
    assert received == ts("2026-03-02T10:00:01")


def test_ingesting_twice_changes_no_output(impl):
    names = ["dedupe_messages.ndjson", "rejects.ndjson", "cohort.ndjson"]
    build(impl, *names)
    relations = ["stg_events", "fct_orders", "fct_product_purchases", "fct_product_views",
                 "dim_users", "category_funnel", "category_price_stats", "category_opportunities",
                 "cohort_non_converted", "arpu_timeseries", "category_conversion_timeseries",
                 "experiment_results", "rejected_events"]

    def snapshot():
        out = {}
        for rel in relations:
            skip = ("loaded_at", "properties", "updated_load")
            rows = [{k: v for k, v in r.items() if k not in skip} for r in impl.rows(rel)]
            if rel == "stg_events":  # synthetic ids of id-less messages may be load-specific
                rows = [{k: v for k, v in r.items() if k != "event_id"} for r in rows]
            out[rel] = sorted(repr(sorted(r.items())) for r in rows)
        return out

    before = snapshot()
    build(impl, *names)
    assert snapshot() == before


def test_dedupe_orders_by_order_id(impl):
    build(impl, "dedupe_orders.ndjson")
    orders = by_key(impl.rows("fct_orders"), "order_id")
    assert sorted(orders) == ["3", "A-1", "B-2"]  # order_id 3 (a number) as text
    # the copy with the earliest event time (09:00, second line) counts
    assert orders["A-1"]["revenue"] == approx(90)
    assert orders["A-1"]["ordered_at"] == ts("2026-03-03T09:00:00")
    assert orders["A-1"]["product_count"] == 2
    # B-2: same event time: the earlier line wins (SPEC's Ties), though the other copy has the
    # earlier receivedAt (12:00:05): receivedAt orders copies of one message, not orders
    assert orders["B-2"]["revenue"] == approx(50)
    lines = impl.rows("fct_product_purchases", order_by="order_id, line_number")
    assert [(r["order_id"], r["line_number"], r["price"]) for r in lines] == [
        ("3", 1, approx(10)), ("A-1", 1, approx(45)), ("A-1", 2, approx(45)),
        ("B-2", 1, approx(50))]
    assert len(impl.rows("stg_events")) == 5  # five distinct messageIds stay in stg_events


def test_identity_stitching(impl):
    build(impl, "stitching.ndjson")
    keys = {e["event_id"]: e["user_key"] for e in impl.rows("stg_events")}
    assert keys == {
        "s-idnew": "alice", "s-id1": "alice", "s-idnull": "alice",  # userId wins
        # a1 was last seen with alice-new (03-05): earlier and later anonymous events follow
        "s-anon1": "alice-new", "s-relink": "alice-new", "s-anon2": "alice-new",
        "s-never": "a2",  # never linked: the anonymousId
        "s-a3view": "42", "s-num": "42",  # numeric userId as text
        # a4: two links at the same instant: the later receivedAt (bobby) wins
        "s-bob": "bob", "s-bobby": "bobby", "s-a4page": "bobby",
    }
    (view,) = impl.rows("fct_product_views")
    assert view["user_key"] == "42"
    users = by_key(impl.rows("dim_users"), "user_key")
    assert sorted(users) == ["42", "a2", "alice", "alice-new", "bob", "bobby"]
    alice = users["alice"]
    assert (alice["first_seen_at"], alice["last_seen_at"]) == (
        ts("2026-03-01T09:00:00"), ts("2026-03-06T09:00:00"))
    # latest non-null email: 03-02 (03-06 sets it to null, which does not count)
    assert alice["email"] == "alice@new.example"
    assert alice["phone"] == "555-0100"
    assert (users["alice-new"]["first_seen_at"], users["alice-new"]["last_seen_at"]) == (
        ts("2026-03-01T08:00:00"), ts("2026-03-10T08:00:00"))
    assert users["alice-new"]["email"] is None
    assert users["42"]["first_seen_at"] == ts("2026-03-01T07:00:00")


def test_ties_follow_load_and_line_order(impl):
    build(impl, "ties.ndjson")
    # SPEC: equal candidates are ordered by load, then line; messageIds sort the other way
    # round here (the earlier line has the larger id), so an order by id gets each one wrong
    # tie-o1: two Order Completed at 10:00:00, both received at 10:00:05: the earliest is
    # the first line (revenue 10)
    (order,) = [o for o in impl.rows("fct_orders") if o["order_id"] == "tie-o1"]
    assert order["revenue"] == approx(10)
    # tie-anon linked to tie-first and tie-second at the same instant: the latest link is
    # the later line, tie-second
    keys = {e["event_id"]: e["user_key"] for e in impl.rows("stg_events")}
    assert keys["tie-page"] == "tie-second"
    # two emails at the same instant: the latest is the later line
    user = by_key(impl.rows("dim_users"), "user_key")["tie-user"]
    assert user["email"] == "second@tie.example"
    # equal event times, receivedAt the other way round: receivedAt decides nothing (it orders
    # copies of one message only). tie-o2's earliest is the first line (30), though the second
    # was received first; tie-anon-r's latest link and tie-user-r's latest email are the later
    # lines, though received earlier
    (order,) = [o for o in impl.rows("fct_orders") if o["order_id"] == "tie-o2"]
    assert order["revenue"] == approx(30)
    assert keys["tie-rpage"] == "tie-fourth"
    user = by_key(impl.rows("dim_users"), "user_key")["tie-user-r"]
    assert user["email"] == "fourth@tie.example"


def test_order_revenue_fallback(impl):
    build(impl, "revenue_fallback.ndjson")
    orders = by_key(impl.rows("fct_orders"), "order_id")
    assert orders["r1"]["revenue"] == approx(20)  # revenue beats total
    assert orders["r2"]["revenue"] == approx(25)  # revenue null: total
    assert orders["r3"]["revenue"] == approx(13)  # 5 x 2 + 3 x 1; the price-less line adds 0
    assert orders["r4"]["revenue"] == 0  # revenue 0 is a value, not a missing one
    assert orders["r5"]["revenue"] == 0  # nothing at all
    assert orders["r5"]["product_count"] == 0
    free = by_key(impl.rows("fct_product_purchases"), "order_id", "line_number")[("r3", 3)]
    assert (free["price"], free["line_revenue"]) == (None, None)
    assert free["quantity"] == approx(4)
    toys = by_key(impl.rows("category_price_stats"), "category")["Toys"]
    assert (toys["purchased_lines"], toys["orders"]) == (4, 2)
    assert toys["units"] == approx(9)  # 2 + 2 + 1 + 4
    assert toys["revenue"] == approx(23)  # 10 + 10 + 3 (null line adds nothing)
    assert toys["avg_item_price"] == approx(13 / 3)  # (5 + 5 + 3) / 3, null price left out
    assert toys["avg_unit_price"] == approx(23 / 5)  # 23 / (2 + 2 + 1)


def test_default_quantity(impl):
    build(impl, "default_quantity.ndjson")
    lines = impl.rows("fct_product_purchases", order_by="line_number")
    assert [r["quantity"] for r in lines] == approx([1, 1, 3])  # absent, null, 3
    assert [r["line_revenue"] for r in lines] == approx([4, 6, 6])
    assert impl.rows("fct_orders")[0]["revenue"] == approx(16)
    tools = impl.rows("category_price_stats")[0]
    assert tools["units"] == approx(5)
    assert tools["avg_unit_price"] == approx(16 / 5)
    assert tools["avg_item_price"] == approx(4)  # (4 + 6 + 2) / 3


REJECTED_LINES = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 25, 26]


def test_every_reject_reason(impl):
    (res,) = build(impl, "rejects.ndjson")
    # 26 physical lines, 2 blank (2 and 17): 24 read = 3 loaded + 21 rejected
    assert (res.lines_read, res.loaded, res.rejected) == (24, 3, 21)
    rejected = impl.rows("rejected_events", order_by="line_number")
    assert [r["line_number"] for r in rejected] == REJECTED_LINES
    physical = (FIXTURES / "rejects.ndjson").read_text().split("\n")
    for r in rejected:
        assert r["raw"] == physical[r["line_number"] - 1]
        assert Path(str(r["source_file"])).name == "rejects.ndjson"
        assert r["reason"]
    assert sorted(e["event_id"] for e in impl.rows("stg_events")) == ["ok-1", "ok-2", "ok-3"]


def test_strict_timestamps_and_numbers(impl):
    (res,) = build(impl, "strict_edges.ndjson")
    # rejected: month "2" (not ISO 8601), hour 24, epoch number, "1_000", "0x10", "inf";
    # loaded: the plain one, "" timestamp (missing: receivedAt), "+.5"/"5."/"1E2"/"-0", a
    # date, a +0530 offset
    assert [r["line_number"] for r in impl.rows("rejected_events", order_by="line_number")] == [
        2, 3, 4, 6, 7, 8]
    assert (res.loaded, res.rejected) == (5, 6)
    events = by_key(impl.rows("stg_events"), "event_id")
    assert events["e-empty"]["event_ts"] == ts("2026-03-01T00:00:00")
    assert events["e-date"]["event_ts"] == ts("2026-03-01T00:00:00")
    assert events["e-compact-offset"]["event_ts"] == ts("2026-03-01T04:30:00")
    (order,) = impl.rows("fct_orders")
    assert order["revenue"] == approx(100)  # "1E2"
    (line,) = impl.rows("fct_product_purchases")
    assert (line["price"], line["quantity"], line["line_revenue"]) == approx((0.5, 5, 2.5))


def test_batch_payload_document(impl):
    (res,) = build(impl, "batch_payload.json")
    # three messages; the third (element starting on line 22) has neither userId nor anonymousId
    assert (res.lines_read, res.loaded, res.rejected) == (3, 2, 1)
    (rejected,) = impl.rows("rejected_events")
    assert rejected["line_number"] == 22
    (user,) = impl.rows("dim_users")
    assert (user["user_key"], user["email"]) == ("019mr8mf4r", "jake@yahoo.com")


def test_message_types_and_active_users(impl):
    build(impl, "message_types.ndjson")
    # active on 03-02: u1 (no type, has event -> track), u2 page, u3 screen, u7 page;
    # not u4 identify, u5 group, u6 alias
    (row,) = arpu_rows(impl, grain="day").values()
    assert row["active_users"] == 4
    assert len(impl.rows("stg_events")) == 7  # every message type is kept
    # only the track (u1) is a Product Viewed; the page named like it is not
    assert [v["user_key"] for v in impl.rows("fct_product_views")] == ["u1"]
    (funnel,) = impl.rows("category_funnel")
    assert (funnel["category"], funnel["viewers"]) == ("Games", 1)


def test_missing_category_and_exact_strings(impl):
    build(impl, "missing_category.ndjson")
    assert len(impl.rows("fct_product_views")) == 5  # null/absent categories stay in fct_*
    lines = impl.rows("fct_product_purchases", order_by="line_number")
    assert [r["category"] for r in lines] == ["Games", None]
    funnel = impl.rows("category_funnel", order_by="category")
    # "Games", "Games " and "games" are three categories; no row for a missing category
    assert [(r["category"], r["viewers"], r["purchasers"]) for r in funnel] == [
        ("Games", 1, 1), ("Games ", 1, 0), ("games", 1, 0)]
    assert [r["category"] for r in impl.rows("category_price_stats")] == ["Games"]
    assert sorted(r["category"] for r in impl.rows("cohort_non_converted")) == ["Games ", "games"]


def test_empty_strings_are_missing(impl):
    build(impl, "empty_strings_models.ndjson")
    # "", "  \t", " " are no category: the views and lines stay in fct_*, without one
    views = by_key(impl.rows("fct_product_views"), "event_id")
    assert {k: v["category"] for k, v in views.items()} == {
        "es-v1": None, "es-v2": None, "es-v3": "Kites", "es-v4": "Kites"}
    assert views["es-v3"]["product_id"] is None  # ""
    # order_id "" and "   " are no order id: each order is keyed by its event_id (as one
    # without order_id), so es-o-a and es-o-b are two orders, not two copies of order ""
    orders = by_key(impl.rows("fct_orders"), "order_id")
    assert sorted(orders) == ["es-o-a", "es-o-b", "es-o-c"]
    assert (orders["es-o-a"]["currency"], orders["es-o-b"]["currency"]) == (None, "USD")
    # numbers too: es-o-a's k4 has price " " (no price) and quantity "\t" (so 1), its k2
    # quantity "" (so 1); es-o-b's revenue "" and total "  " fall back to its lines: 160, 10
    assert [orders[k]["revenue"] for k in ("es-o-a", "es-o-b", "es-o-c")] == approx([160, 10, 5])
    lines = impl.rows("fct_product_purchases", order_by="order_id, line_number")
    assert [(r["order_id"], r["category"], r["product_id"], r["sku"]) for r in lines] == [
        ("es-o-a", None, None, None), ("es-o-a", "Kites", "k2", None),
        ("es-o-a", None, "k3", None), ("es-o-a", "Kites", "k4", None),
        ("es-o-b", "Kites", "k2", None)]
    assert [(r["price"], r["quantity"], r["line_revenue"]) for r in lines] == [
        (100, 1, 100), (10, 1, 10), (50, 1, 50), (None, 1, None), (10, 1, 10)]
    assert impl.rows("rejected_events") == []
    # Kites alone: viewed by es-u3 and es-u4, bought (10 a line) by two users who never
    # viewed it. The "" category (1 viewer x 100 = 100 at stake) no longer wins over
    # Kites (2 x 10 = 20)
    assert [(r["category"], r["viewers"], r["purchasers"])
            for r in impl.rows("category_funnel")] == [("Kites", 2, 0)]
    (stats,) = impl.rows("category_price_stats")
    # three Kites lines, one without a price: left out of the average
    assert (stats["category"], stats["purchased_lines"], stats["orders"]) == ("Kites", 3, 2)
    assert stats["avg_item_price"] == approx(10)
    (opp,) = impl.rows("category_opportunities")
    assert (opp["category"], opp["rank"], opp["revenue_at_stake"]) == ("Kites", 1, approx(20))
    assert [(r["category"], r["user_key"])
            for r in impl.rows("cohort_non_converted", order_by="user_key")] == [
        ("Kites", "es-u3"), ("Kites", "es-u4")]
    # experiment_id "" / " " falls back to experiment_name, variation_id "" to
    # variation_name; a blank "Experiment name" or "Variant name" is no exposure
    rows = by_key(impl.rows("experiment_results"), "experiment", "variant")
    assert sorted(rows) == [("es-checkout", "A"), ("es-checkout", "B")]
    assert [(rows[k]["users"], rows[k]["excluded_users"]) for k in sorted(rows)] == [
        (1, 0), (1, 0)]
    # a later identify with email "" and phone " \n" does not replace the values
    user = by_key(impl.rows("dim_users"), "user_key")["es-u10"]
    assert (user["email"], user["phone"]) == ("es10@example.com", "+15550010")


# ---------------------------------------------------------------- section 2: funnel


def test_funnel_window_edges(impl):
    build(impl, "funnel_window.ndjson")
    (row,) = impl.rows("category_funnel")
    # u1 at exactly e + 7 days, u3 at e itself, u6 after 3 days convert; u2 (7 days + 1 s),
    # u4 (purchase before its view), u5 (8 days after its first view; the second view does
    # not restart the window) do not
    assert (row["viewers"], row["purchasers"]) == (6, 3)
    assert row["conversion_rate"] == approx(0.5)
    assert row["median_time_to_convert_s"] == approx(259200)  # median of 0, 3 d, 7 d
    cohort = impl.rows("cohort_non_converted", order_by="user_key")
    assert [r["user_key"] for r in cohort] == ["u2", "u4", "u5"]
    u5 = cohort[2]
    assert (u5["first_viewed_at"], u5["last_viewed_at"], u5["views"]) == (
        ts("2026-03-02T10:00:00"), ts("2026-03-06T10:00:00"), 2)


def test_funnel_window_is_a_var(impl):
    build(impl, "funnel_window.ndjson", conversion_window_days=8)
    (row,) = impl.rows("category_funnel")
    # 8 days: u2 (7 d + 1 s) and u5 (exactly 8 d) now convert as well
    assert (row["viewers"], row["purchasers"]) == (6, 5)
    # times 0, 3 d, 7 d, 7 d + 1 s, 8 d -> median 7 d
    assert row["median_time_to_convert_s"] == approx(604800)


def test_funnel_window_with_reentry(impl):
    build(impl, "funnel_window.ndjson", funnel_reentry=True)
    (row,) = impl.rows("category_funnel")
    # re-entry: u5's second view (03-06) is 4 days before its purchase
    assert (row["viewers"], row["purchasers"]) == (6, 4)
    assert row["median_time_to_convert_s"] == approx((259200 + 345600) / 2)  # 0, 3d, 4d, 7d


def test_time_to_convert_keeps_milliseconds(impl):
    build(impl, "time_to_convert_ms.ndjson")
    (row,) = impl.rows("category_funnel")
    # 10:00:00.001 -> 10:00:00.005: exactly 0.004 s (epoch seconds as doubles lose this)
    assert row["median_time_to_convert_s"] == approx(0.004, rel=1e-9)


def test_reentry_off(impl):
    build(impl, "funnel_reentry.ndjson")
    (row,) = impl.rows("category_funnel")
    # only u2 converts: entry 03-01, first purchase 03-05 (4 days)
    assert (row["viewers"], row["purchasers"]) == (3, 1)
    assert row["median_time_to_convert_s"] == approx(4 * 86400)
    assert [r["user_key"] for r in impl.rows("cohort_non_converted", order_by="user_key")] == [
        "u1", "u3"]


def test_reentry_on(impl):
    build(impl, "funnel_reentry.ndjson", funnel_reentry=True)
    (row,) = impl.rows("category_funnel")
    # u1: view 03-20 -> purchase 03-22 (2 d); u2: purchase 03-05, latest view before it
    # 03-03 (2 d); u3: its purchase is 8 d after the only earlier view, the later view is useless
    assert (row["viewers"], row["purchasers"]) == (3, 2)
    assert row["median_time_to_convert_s"] == approx(2 * 86400)
    assert [r["user_key"] for r in impl.rows("cohort_non_converted")] == ["u3"]


def test_user_in_several_categories_and_periods(impl):
    build(impl, "multi_category.ndjson")
    funnel = by_key(impl.rows("category_funnel"), "category")
    assert (funnel["Books"]["viewers"], funnel["Books"]["purchasers"]) == (1, 1)
    assert funnel["Books"]["median_time_to_convert_s"] == approx(3 * 86400)
    # Music: u1 never buys it; u2 buys 9 days after entering
    assert (funnel["Music"]["viewers"], funnel["Music"]["purchasers"]) == (2, 0)
    assert funnel["Music"]["median_time_to_convert_s"] is None
    rows = impl.rows("category_conversion_timeseries", order_by="grain, period_start, category")
    got = {(r["grain"], _as_date(r["period_start"]), r["category"]): (r["viewers"], r["purchasers"])
           for r in rows if r["segment"] == "all"}
    assert got == {
        # a period's funnel starts at the first view in that period
        ("day", day("2026-03-02"), "Books"): (1, 1),
        ("day", day("2026-03-04"), "Books"): (1, 1),
        ("day", day("2026-03-10"), "Books"): (1, 0),  # the purchase was before this entry
        ("day", day("2026-03-03"), "Music"): (2, 0),
        ("day", day("2026-03-11"), "Music"): (1, 1),  # u2 re-enters on 03-11, buys 03-12
        ("week", day("2026-03-02"), "Books"): (1, 1),
        ("week", day("2026-03-09"), "Books"): (1, 0),
        ("week", day("2026-03-02"), "Music"): (2, 0),
        ("week", day("2026-03-09"), "Music"): (1, 1),
        ("month", day("2026-03-01"), "Books"): (1, 1),
        ("month", day("2026-03-01"), "Music"): (2, 0),  # month entry 03-03: 9 days to 03-12
    }
    for r in rows:
        assert r["conversion_rate"] == approx(r["purchasers"] / r["viewers"])
    # Music is the target (rank 1: 2 non-converted x 8 > 0 x 12); both users are in its cohort
    opps = by_key(impl.rows("category_opportunities"), "category")
    assert (opps["Music"]["rank"], opps["Books"]["rank"]) == (1, 2)
    assert opps["Music"]["revenue_at_stake"] == approx(16)
    assert opps["Books"]["revenue_at_stake"] == approx(0)
    assert {r["segment"] for r in rows} == {"all", "cohort"}  # non_cohort has no viewers


def test_week_and_month_boundaries(impl):
    build(impl, "period_boundaries.ndjson")
    rows = arpu_rows(impl)
    # week starts Monday: Sunday 23:59:59 (u1), u5 at 01:00+02:00 (Sunday 23:00 UTC), u3's
    # Saturday order and u4's Sunday order are in the week of 02-23; Monday 00:00 (u2) is not
    check_arpu(rows[("week", day("2026-02-23"))], active=4, revenue=40, purchasers=2)
    check_arpu(rows[("week", day("2026-03-02"))], active=1, revenue=0, purchasers=0)
    check_arpu(rows[("week", day("2026-03-30"))], active=1, revenue=7, purchasers=1)
    check_arpu(rows[("month", day("2026-02-01"))], active=1, revenue=10, purchasers=1)
    # March: u1, u2, u4, u5, u6 (order 03-31 23:59:59); u6's 04-01 page is April's
    check_arpu(rows[("month", day("2026-03-01"))], active=5, revenue=37, purchasers=2)
    check_arpu(rows[("month", day("2026-04-01"))], active=1, revenue=0, purchasers=0)
    check_arpu(rows[("day", day("2026-03-01"))], active=3, revenue=30, purchasers=1)
    assert sorted(k for k in rows if k[0] == "day") == [
        ("day", day(d)) for d in ("2026-02-28", "2026-03-01", "2026-03-02", "2026-03-31",
                                  "2026-04-01")]
    assert len(rows) == 5 + 3 + 3
    # no category, so no cohort: non_cohort is everybody and the cohort segment has no rows
    all_rows = impl.rows("arpu_timeseries")
    assert not [r for r in all_rows if r["segment"] == "cohort"]
    assert len([r for r in all_rows if r["segment"] == "non_cohort"]) == len(rows)


# ---------------------------------------------------------------- opportunities and cohort


def test_opportunities(impl):
    build(impl, "cohort.ndjson")
    funnel = by_key(impl.rows("category_funnel"), "category")
    hs, games = funnel["Home Supplies"], funnel["Games"]
    # HS: u1 (1 d) and u2 (3 d) of u1..u4 convert; Games: u5 (1 h) and u6 (1 d) of u1, u5, u6
    assert (hs["viewers"], hs["purchasers"], games["viewers"], games["purchasers"]) == (4, 2, 3, 2)
    assert hs["median_time_to_convert_s"] == approx(2 * 86400)
    assert games["median_time_to_convert_s"] == approx((3600 + 86400) / 2)
    stats = by_key(impl.rows("category_price_stats"), "category")
    assert stats["Home Supplies"]["avg_item_price"] == approx(350)
    assert stats["Games"]["avg_item_price"] == approx(25)
    # both have two purchased lines: tied at rank 1
    assert stats["Home Supplies"]["order_rank"] == stats["Games"]["order_rank"] == 1
    opps = by_key(impl.rows("category_opportunities"), "category")
    hs, games = opps["Home Supplies"], opps["Games"]
    assert (hs["non_converted"], games["non_converted"]) == (2, 1)
    assert hs["revenue_at_stake"] == approx(700) and games["revenue_at_stake"] == approx(25)
    # median conversion (0.5 + 2/3) / 2: HS below; median price 187.5: HS at or above
    assert (hs["low_conversion"], hs["high_price"]) == (True, True)
    assert (games["low_conversion"], games["high_price"]) == (False, False)
    assert (hs["rank"], games["rank"]) == (1, 2)


def test_opportunity_ties_and_target_by_name(impl):
    build(impl, "target_tie.ndjson")
    opps = impl.rows("category_opportunities", order_by="category")
    # nothing was bought: no price, so no revenue at stake; the nulls tie at rank 1
    assert [(o["category"], o["rank"], o["revenue_at_stake"], o["high_price"]) for o in opps] == [
        ("Apple", 1, None, None), ("Zebra", 1, None, None)]
    # both convert 0 %, which is not below the median of 0 %
    assert [o["low_conversion"] for o in opps] == [False, False]
    # tie at rank 1: the target is the smallest name, Apple, whose cohort is u2 (active on
    # 03-02 and 03-03; Zebra's u1 only on 03-02)
    cohort_days = arpu_rows(impl, "cohort", grain="day")
    assert sorted(k[1] for k in cohort_days) == [day("2026-03-02"), day("2026-03-03")]
    assert all(r["active_users"] == 1 for r in cohort_days.values())
    assert arpu_rows(impl, "non_cohort")[("day", day("2026-03-02"))]["active_users"] == 2


def test_cohort_without_promo_start(impl):
    build(impl, "cohort.ndjson")
    cohort = impl.rows("cohort_non_converted", order_by="category, user_key")
    assert [(r["category"], r["user_key"], r["first_viewed_at"], r["last_viewed_at"], r["views"])
            for r in cohort] == [
        ("Games", "u1", ts("2026-03-02T11:00:00"), ts("2026-03-02T11:00:00"), 1),
        ("Home Supplies", "u3", ts("2026-03-04T09:00:00"), ts("2026-03-11T09:00:00"), 3),
        ("Home Supplies", "u4", ts("2026-03-12T09:00:00"), ts("2026-03-12T09:00:00"), 1),
    ]
    assert (cohort[1]["email"], cohort[1]["phone"]) == ("u3@example.com", "+15550003")
    assert cohort[2]["email"] is None
    month = day("2026-03-01")
    # all: u1..u6 active, orders 400 + 300 + 20 + 30 by four users
    check_arpu(arpu_rows(impl, "all")[("month", month)], active=6, revenue=750, purchasers=4)
    # target Home Supplies (rank 1): cohort {u3, u4} bought nothing
    check_arpu(arpu_rows(impl, "cohort")[("month", month)], active=2, revenue=0, purchasers=0)
    check_arpu(arpu_rows(impl, "non_cohort")[("month", month)], active=4, revenue=750,
               purchasers=4)


def test_cohort_with_promo_start(impl):
    build(impl, "cohort.ndjson", promo_start="2026-03-10")
    cohort = impl.rows("cohort_non_converted", order_by="category, user_key")
    # before 03-10: u2 had viewed (03-08) but not yet bought (03-11); u3's 03-11 view and u4
    # (first view 03-12) are after it
    assert [(r["category"], r["user_key"], r["first_viewed_at"], r["last_viewed_at"], r["views"])
            for r in cohort] == [
        ("Games", "u1", ts("2026-03-02T11:00:00"), ts("2026-03-02T11:00:00"), 1),
        ("Home Supplies", "u2", ts("2026-03-08T12:00:00"), ts("2026-03-08T12:00:00"), 1),
        ("Home Supplies", "u3", ts("2026-03-04T09:00:00"), ts("2026-03-06T09:00:00"), 2),
    ]
    month = day("2026-03-01")
    # the funnel itself ignores promo_start
    hs = by_key(impl.rows("category_funnel"), "category")["Home Supplies"]
    assert (hs["viewers"], hs["purchasers"]) == (4, 2)
    # cohort {u2, u3}: u2's 300 order after the promotion
    check_arpu(arpu_rows(impl, "cohort")[("month", month)], active=2, revenue=300, purchasers=1)
    check_arpu(arpu_rows(impl, "non_cohort")[("month", month)], active=4, revenue=450,
               purchasers=3)
    conv = {(r["segment"], r["category"]): (r["viewers"], r["purchasers"])
            for r in impl.rows("category_conversion_timeseries")
            if r["grain"] == "month"}
    assert conv[("cohort", "Home Supplies")] == (2, 1)  # u2 converts, u3 does not
    assert conv[("non_cohort", "Home Supplies")] == (2, 1)  # u1 converts, u4 does not
    assert conv[("all", "Home Supplies")] == (4, 2)


def test_target_category_var(impl):
    build(impl, "cohort.ndjson", target_category="Games")
    # Games' cohort is u1, who bought the 400 Home Supplies order
    month = day("2026-03-01")
    check_arpu(arpu_rows(impl, "cohort")[("month", month)], active=1, revenue=400, purchasers=1)
    check_arpu(arpu_rows(impl, "non_cohort")[("month", month)], active=5, revenue=350,
               purchasers=3)


def test_analysis_range(impl):
    build(impl, "analysis_range.ndjson", start_date="2026-03-01", end_date="2026-03-10")
    (funnel,) = impl.rows("category_funnel")
    # u1 enters on the last day and converts after end_date (26 h); u2 enters 03-05 (its
    # 02-28 view is out of range), after its purchase; u3's view at end_date is out
    assert (funnel["viewers"], funnel["purchasers"]) == (2, 1)
    assert funnel["median_time_to_convert_s"] == approx(26 * 3600)
    (stats,) = impl.rows("category_price_stats")
    assert (stats["purchased_lines"], stats["revenue"]) == (1, approx(10))  # x2 only
    assert len(impl.rows("fct_orders")) == 2 and len(impl.rows("fct_product_views")) == 4
    rows = arpu_rows(impl)
    check_arpu(rows[("month", day("2026-03-01"))], active=2, revenue=10, purchasers=1)
    assert sorted(k[1] for k in rows if k[0] == "day") == [
        day("2026-03-03"), day("2026-03-05"), day("2026-03-09")]
    (member,) = impl.rows("cohort_non_converted")
    assert (member["user_key"], member["views"]) == ("u2", 1)


# ---------------------------------------------------------------- experiments


def test_experiment_with_user_in_two_variants(impl):
    build(impl, "experiment_variants.ndjson")
    rows = by_key(impl.rows("experiment_results"), "experiment", "variant")
    control, treat = rows[("exp1", "control")], rows[("exp1", "treatment")]
    # uE saw both: excluded from both arms; its 500 order counts nowhere
    assert (control["users"], control["excluded_users"]) == (2, 1)
    assert (treat["users"], treat["excluded_users"]) == (4, 1)
    # control: uA 50 (the 999 order is 40 days later), uB 0
    assert (control["purchasers"], control["revenue"], control["arpu"]) == (1, 50, 25)
    assert control["is_control"] is True
    for col in ("arpu_uplift", "arpu_p_value", "conversion_p_value", "arpu_ci_low",
                "arpu_ci_high"):
        assert control[col] is None
    # treatment: uC 100 (29 d), uD 20 (exactly 30 d), uF 0 (30 d + 1 s; and one before
    # exposure), uG 0 (experiment_name/variation_name)
    assert (treat["purchasers"], treat["revenue"], treat["arpu"]) == (2, 120, 30)
    assert treat["conversion_rate"] == approx(0.5)
    assert treat["arpu_uplift"] == approx(30 / 25 - 1)
    # var [50, 0] = 1250; var [100, 20, 0, 0] = 6800 / 3
    se = math.sqrt((6800 / 3) / 4 + 1250 / 2)
    assert treat["arpu_p_value"] == approx(2 * norm.sf(5 / se), abs=1e-6)
    assert treat["arpu_ci_low"] == approx(5 - Z * se, abs=1e-6)
    assert treat["arpu_ci_high"] == approx(5 + Z * se, abs=1e-6)
    assert treat["conversion_p_value"] == approx(1.0, abs=1e-6)  # 2/4 vs 1/2: z = 0


def test_experiment_single_user_arms(impl):
    build(impl, "experiment_variants.ndjson")
    rows = by_key(impl.rows("experiment_results"), "experiment", "variant")
    # $experiment_started; no variant named control: the first by name (v1) is the control
    v1, v2 = rows[("exp2", "v1")], rows[("exp2", "v2")]
    assert (v1["is_control"], v2["is_control"]) == (True, False)
    assert (v1["users"], v1["arpu"], v2["users"], v2["arpu"]) == (1, 50, 1, 0)
    assert v2["arpu_uplift"] == approx(-1)
    # one user per arm: no sample variance, so no ARPU test
    assert (v2["arpu_p_value"], v2["arpu_ci_low"], v2["arpu_ci_high"]) == (None, None, None)
    # the pooled two-proportion test is defined: p = 1/2, se = sqrt(0.25 * 2), z = -sqrt(2)
    assert v2["conversion_p_value"] == approx(2 * norm.sf(math.sqrt(2)), abs=1e-6)


def test_control_variant_var(impl):
    build(impl, "experiment_variants.ndjson", control_variant="treatment")
    rows = by_key(impl.rows("experiment_results"), "experiment", "variant")
    assert rows[("exp1", "treatment")]["is_control"] is True
    assert rows[("exp1", "treatment")]["arpu_uplift"] is None  # the control's
    assert rows[("exp1", "control")]["arpu_uplift"] == approx(25 / 30 - 1)
    # exp2 has no "treatment": its control falls back to the first name
    assert rows[("exp2", "v1")]["is_control"] is True


def test_experiment_300_users_against_scipy(impl):
    build(impl, "experiment_300.ndjson")
    rows = by_key(impl.rows("experiment_results"), "variant")
    control, treat = experiment_fixture.revenues("control"), experiment_fixture.revenues(
        "treatment")
    n = experiment_fixture.USERS_PER_ARM
    bought_c, bought_t = sum(r > 0 for r in control), sum(r > 0 for r in treat)
    assert (bought_c, bought_t) == (50, 60)  # i % 3 == 0 of 150; i % 5 in (0, 1) of 150
    for variant, revenues, bought in (("control", control, bought_c),
                                      ("treatment", treat, bought_t)):
        row = rows[variant]
        assert (row["users"], row["excluded_users"], row["purchasers"]) == (n, 3, bought)
        assert row["revenue"] == approx(sum(revenues))
        assert row["arpu"] == approx(sum(revenues) / n)
        assert row["conversion_rate"] == approx(bought / n)

    def var(xs):
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)

    diff = sum(treat) / n - sum(control) / n
    se = math.sqrt(var(treat) / n + var(control) / n)
    t = rows["treatment"]
    assert t["arpu_uplift"] == approx(sum(treat) / sum(control) - 1)
    assert t["arpu_p_value"] == approx(2 * norm.sf(abs(diff / se)), abs=1e-6)
    assert t["arpu_ci_low"] == approx(diff - Z * se, abs=1e-6)
    assert t["arpu_ci_high"] == approx(diff + Z * se, abs=1e-6)
    pooled = (bought_c + bought_t) / (2 * n)
    z = (bought_t / n - bought_c / n) / math.sqrt(pooled * (1 - pooled) * (2 / n))
    assert t["conversion_p_value"] == approx(2 * norm.sf(abs(z)), abs=1e-6)


def test_experiment_300_fixture_matches_rules():
    assert (FIXTURES / "experiment_300.ndjson").read_text().splitlines() == (
        experiment_fixture.lines())


def test_variant_only_excluded_users_saw_has_no_row(impl):
    build(impl, "experiment_excluded_only.ndjson")
    rows = by_key(impl.rows("experiment_results"), "experiment", "variant")
    # xo-mixed saw Amber, then Blue: excluded. Nobody included saw Amber: no row, so it
    # cannot be the control (it would be, first by name); Blue is
    assert sorted(rows) == [("button", "Blue"), ("button", "Green")]
    blue, green = rows[("button", "Blue")], rows[("button", "Green")]
    assert (blue["is_control"], green["is_control"]) == (True, False)
    # excluded_users: per variant, the excluded users who saw it
    assert (blue["users"], blue["excluded_users"], green["users"], green["excluded_users"]) == (
        3, 1, 3, 0)
    # Blue [10, 0, 30] (xo-u1's 77 falls a month after exposure), Green [50, 0, 20];
    # xo-mixed's 500 counts nowhere
    assert (blue["purchasers"], blue["revenue"], blue["arpu"]) == (2, approx(40), approx(40 / 3))
    assert (green["purchasers"], green["revenue"], green["arpu"]) == (2, approx(70), approx(70 / 3))
    assert green["arpu_uplift"] == approx(0.75)  # (70 / 3) / (40 / 3) - 1
    # sample variances 700 / 3 and 1900 / 3: se = sqrt((700 / 3 + 1900 / 3) / 3) = 16.9967
    se = math.sqrt((700 / 3 + 1900 / 3) / 3)
    assert green["arpu_p_value"] == approx(0.5562985, abs=1e-6)  # 2 * sf(10 / se)
    assert green["arpu_p_value"] == approx(2 * norm.sf(10 / se), abs=1e-6)
    assert green["arpu_ci_low"] == approx(10 - Z * se, abs=1e-6)  # -23.313
    assert green["arpu_ci_high"] == approx(10 + Z * se, abs=1e-6)  # 43.313
    assert green["conversion_p_value"] == approx(1.0, abs=1e-6)  # 2/3 vs 2/3
    for col in ("arpu_uplift", "arpu_p_value", "conversion_p_value", "arpu_ci_low",
                "arpu_ci_high"):
        assert blue[col] is None


def test_control_row_carries_no_uplift(impl):
    build(impl, "experiment_variants.ndjson")
    rows = by_key(impl.rows("experiment_results"), "experiment", "variant")
    # SPEC: control rows carry nulls in uplift, p-values and CI (not uplift 0 against itself)
    for key in (("exp1", "control"), ("exp2", "v1")):
        assert rows[key]["is_control"] is True
        for col in ("arpu_uplift", "arpu_p_value", "conversion_p_value", "arpu_ci_low",
                    "arpu_ci_high"):
            assert rows[key][col] is None, (key, col)
    assert rows[("exp1", "treatment")]["arpu_uplift"] == approx(30 / 25 - 1)


# ---------------------------------------------------------------- column types

# every count (and rank) column of SPEC section 2, per relation
COUNT_COLUMNS = {
    "fct_orders": ["product_count"],
    "category_funnel": ["viewers", "purchasers"],
    "category_price_stats": ["purchased_lines", "orders", "order_rank"],
    "category_opportunities": ["viewers", "purchasers", "non_converted", "rank"],
    "cohort_non_converted": ["views"],
    "arpu_timeseries": ["active_users", "purchasers"],
    "category_conversion_timeseries": ["viewers", "purchasers"],
    "experiment_results": ["users", "excluded_users", "purchasers"],
}


def test_counts_are_bigint_in_the_published_file(arpu_project):
    """DuckDB's sum() of integers is a 128-bit HUGEINT, which BI drivers read as a decimal or
    not at all: every count is a BIGINT, as count() gives."""
    import duckdb

    build(arpu_project, "cohort.ndjson", "experiment_variants.ndjson")
    with duckdb.connect(str(arpu_project.root / "arpu.duckdb"), read_only=True) as con:
        types = {(t, c): d for t, c, d in con.execute(
            "select table_name, column_name, data_type from duckdb_columns() "
            "where database_name = current_database() and not internal").fetchall()}
    for relation, columns in COUNT_COLUMNS.items():
        for column in columns:
            assert types[(relation, column)] == "BIGINT", (relation, column)
    assert not [k for k, d in types.items() if d == "HUGEINT"]

