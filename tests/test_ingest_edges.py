"""Ingest at the edges of SPEC section 1 (issue 15): blank strings are missing, `products` as a
string, repeated keys, money inside a product, size limits and one spelling per file.

`fixtures/ingest_edges.ndjson` (one message per line, numbered below) is built once on the
product and once on the plain-Python reference (`tests/reference/`); each expected value is
worked out by hand in the comment beside it. Behaviour only the product has (its reasons, its
limits as arguments, its fast path, how it names a file) is pinned on the product alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from support.project import ProjectHarness, run_arpu

from runner.ingest import MAX_MESSAGE_BYTES, Loader

try:
    from tests.reference.harness import ReferenceProject
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from reference.harness import ReferenceProject  # type: ignore[no-redef]

EDGES = Path(__file__).parent / "fixtures" / "ingest_edges.ndjson"
approx = pytest.approx
# 1 blank timestamp and originalTimestamp     7 repeated revenue, the last negative
# 2 whitespace-only messageId and userId      8 products: a string holding an object
# 3 empty type, event Product Viewed          9 product revenue -5
# 4 products as a string holding an array    10 product total "abc"
# 5 repeated keys at every level             11 product price 1e400
# 6 identify with a repeated email           12 a 47 KB order of 120 products
REJECTED = [7, 8, 9, 10, 11]
ts = datetime.fromisoformat


@pytest.fixture(scope="module", params=["reference", "product"])
def edges(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fixture ingested and built once per implementation: (project, ingest counts)."""
    if request.param == "reference":
        impl: Any = ReferenceProject()
    else:
        impl = ProjectHarness(tmp_path_factory.mktemp("edges") / "project")
    counts = impl.ingest(EDGES)
    assert impl.build().success
    return impl, counts


def rows_by(impl: Any, relation: str, *key: str) -> dict[Any, dict[str, Any]]:
    rows = impl.rows(relation)
    if len(key) == 1:
        return {r[key[0]]: r for r in rows}
    return {tuple(r[k] for k in key): r for r in rows}


def test_accounting_and_rejected_lines(edges: Any) -> None:
    impl, counts = edges
    assert (counts.lines_read, counts.loaded, counts.rejected) == (12, 7, 5)
    rejected = impl.rows("rejected_events", order_by="line_number")
    assert [r["line_number"] for r in rejected] == REJECTED
    physical = EDGES.read_text().split("\n")
    for r in rejected:  # the line as read, even where it was read again canonicalised (7)
        assert r["raw"] == physical[r["line_number"] - 1]


def test_blank_strings_are_missing(edges: Any) -> None:
    impl, _ = edges
    events = rows_by(impl, "stg_events", "event_id")
    # 1: timestamp "" and originalTimestamp " \t " fall back to receivedAt
    assert events["ie-blank-time"]["event_ts"] == ts("2026-03-04T08:00:00")
    # 2: messageId " " is no id (the message gets one of its own), userId "\t" is no user:
    # the anonymousId is the user
    (anonymous,) = [e for e in events.values() if e["anonymous_id"] == "ie-a2"]
    assert anonymous["event_id"] != " " and anonymous["user_id"] is None
    assert anonymous["user_key"] == "ie-a2"
    # 3: type "" with an event is a track
    assert events["ie-no-type"]["event_name"] == "Product Viewed"
    assert anonymous["event_name"] == "page"
    views = rows_by(impl, "fct_product_views", "user_key")
    assert sorted(views) == ["ie-u1", "ie-u3"]
    assert views["ie-u1"]["viewed_at"] == ts("2026-03-04T08:00:00")


def test_products_as_a_string_are_read(edges: Any) -> None:
    impl, _ = edges
    orders = rows_by(impl, "fct_orders", "order_id")
    # 4: no revenue, no total: 20 x 2 + "5.5" x 1 (default quantity) = 45.5
    assert orders["ie-o4"]["revenue"] == approx(45.5)
    assert orders["ie-o4"]["product_count"] == 2
    lines = rows_by(impl, "fct_product_purchases", "order_id", "line_number")
    assert (lines[("ie-o4", 1)]["product_id"], lines[("ie-o4", 1)]["category"],
            lines[("ie-o4", 1)]["line_revenue"]) == ("ie-p1", "IE Gadgets", approx(40))
    assert (lines[("ie-o4", 2)]["price"], lines[("ie-o4", 2)]["quantity"]) == approx((5.5, 1))
    # 8: a string holding an object is no array: rejected, so no order ie-o7
    assert "ie-o7" not in orders


def test_a_repeated_key_takes_its_last_value(edges: Any) -> None:
    impl, _ = edges
    events = rows_by(impl, "stg_events", "event_id")
    # 5: userId "ie-wrong" then "ie-u5"; timestamp 03-01 then 03-04 12:00
    assert events["ie-repeated"]["user_key"] == "ie-u5"
    assert events["ie-repeated"]["event_ts"] == ts("2026-03-04T12:00:00")
    orders = rows_by(impl, "fct_orders", "order_id")
    # order_id "ie-wrong" then "ie-o5"; revenue 5 then 50
    assert "ie-wrong" not in orders
    assert (orders["ie-o5"]["user_key"], orders["ie-o5"]["revenue"]) == ("ie-u5", approx(50))
    # the product's price -1 then 10 (the -1 alone would reject the order): 10 x 3
    (line,) = [r for r in impl.rows("fct_product_purchases") if r["order_id"] == "ie-o5"]
    assert (line["price"], line["quantity"], line["line_revenue"]) == approx((10, 3, 30))
    # 6: traits email old@ then new@
    users = rows_by(impl, "dim_users", "user_key")
    assert (users["ie-u5"]["email"], users["ie-u5"]["phone"]) == (
        "new@example.com", "+1 555 0100")
    # 7: revenue 50 then -5: the last is validated, and rejected
    assert "ie-o6" not in orders


def test_money_inside_a_product_is_validated(edges: Any) -> None:
    impl, _ = edges
    # 9-11: product revenue -5, total "abc", price 1e400 (not finite): rejected
    assert {9, 10, 11} <= {r["line_number"] for r in impl.rows("rejected_events")}
    orders = rows_by(impl, "fct_orders", "order_id")
    assert not {"ie-o8", "ie-o9", "ie-o10"} & set(orders)


def test_a_big_order_is_not_rejected_for_its_size(edges: Any) -> None:
    impl, _ = edges
    assert len(EDGES.read_text().split("\n")[11].encode()) > 46 * 1024  # over the old 32 KB
    orders = rows_by(impl, "fct_orders", "order_id")
    # 12: 120 products priced 1..120, quantity 1: 120 x 121 / 2 = 7260
    assert orders["ie-o11"]["product_count"] == 120
    assert orders["ie-o11"]["revenue"] == approx(7260)
    lines = [r for r in impl.rows("fct_product_purchases") if r["order_id"] == "ie-o11"]
    assert sorted(r["line_number"] for r in lines) == list(range(1, 121))
    assert sum(r["line_revenue"] for r in lines) == approx(7260)


# ---------------------------------------------------------------- the product alone


def test_reasons_of_the_edge_lines(tmp_path: Path) -> None:
    con = duckdb.connect()
    Loader(con).load([EDGES])
    assert con.execute("select line_number, reason from raw_rejected order by 1").fetchall() == [
        (7, "properties.revenue is negative"),
        (8, "properties.products is a string that does not hold a JSON array"),
        (9, "properties.products[0].revenue is negative"),
        (10, "properties.products[0].total is not a number"),
        (11, "properties.products[0].price is not a finite number"),
    ]
    # the canonical text reaches raw_events (and so PostgreSQL and Spark, copied from it): the
    # string became an array, the repeated keys one key each; the messages without an id keep
    # the hash of the line as read
    props = dict(con.execute("select message_id, properties from raw_events "
                             "where message_id in ('ie-string-products', 'ie-repeated')")
                 .fetchall())
    assert json.loads(props["ie-string-products"])["products"][1] == {
        "product_id": "ie-p2", "category": "IE Books", "price": "5.5"}
    assert json.loads(props["ie-repeated"]) == {
        "order_id": "ie-o5", "revenue": 50, "products": [
            {"product_id": "ie-p1", "category": "IE Gadgets", "price": 10, "quantity": 3}]}
    assert '"revenue":5,' not in props["ie-repeated"]


@pytest.mark.parametrize(("product", "reason"), [
    ('{"revenue": -5}', "properties.products[0].revenue is negative"),
    ('{"total": "abc"}', "properties.products[0].total is not a number"),
    ('{"total": true}', "properties.products[0].total is not a number"),
    ('{"price": 1e400}', "properties.products[0].price is not a finite number"),
    ('{"quantity": 2E+308}', "properties.products[0].quantity is not a finite number"),
    ('{"price": 1' + "0" * 400 + "}", "properties.products[0].price is not a finite number"),
    ('{"revenue": 1e2, "total": 12.5, "price": 1e-400, "quantity": 3}', None),
    ('{"price": 10, "details": {"revenue": -1}}', None),  # not the product's own revenue
    ('{"price": 1, "price": -1}', "properties.products[0].price is negative"),  # the last
    ('{"price": -1, "price": 1}', None),
])
def test_product_money_fast_path(tmp_path: Path, product: str, reason: str | None) -> None:
    """A product is checked field by field only when the products text could hold a bad
    value; every bad value must get there, whatever the other products look like."""
    path = tmp_path / "order.ndjson"
    path.write_text(
        '{"type": "track", "event": "Order Completed", "userId": "u", "timestamp": '
        '"2026-03-01T00:00:00Z", "properties": {"products": [' + product + ', {"price": 2}]}}\n')
    con = duckdb.connect()
    Loader(con).load([path])
    assert con.execute("select reason from raw_rejected").fetchall() == (
        [(reason,)] if reason else [])


def _order(products: int, pad: int = 0) -> str:
    return json.dumps({
        "type": "track", "event": "Order Completed", "userId": "u", "messageId": "o",
        "timestamp": "2026-03-01T00:00:00Z",
        "properties": {"order_id": "o", "pad": "x" * pad, "products": [{"price": 1}] * products}})


def test_size_limits_are_loader_arguments(tmp_path: Path) -> None:
    line = _order(0)
    exact = _order(0, pad=MAX_MESSAGE_BYTES - len(line))  # 1 MiB to the byte
    assert len(exact.encode()) == MAX_MESSAGE_BYTES == 1 << 20
    path = tmp_path / "sizes.ndjson"
    path.write_text("\n".join([
        exact, _order(0, pad=MAX_MESSAGE_BYTES - len(line) + 1), _order(10_000), _order(10_001),
        EDGES.read_text().split("\n")[11],  # 47 KB, 120 products
    ]) + "\n")

    def reasons(**limits: int) -> dict[int, str]:
        con = duckdb.connect()
        Loader(con, **limits).load([path])
        return dict(con.execute("select line_number, reason from raw_rejected").fetchall())

    assert reasons() == {2: "message larger than 1,048,576 bytes",
                         4: "properties.products has more than 10,000 items"}
    # the old limit, 32 KB: every line here is larger (10,000 products take 140 KB)
    assert reasons(max_message_bytes=32 << 10) == {
        n: "message larger than 32,768 bytes" for n in (1, 2, 3, 4, 5)}
    assert reasons(max_products=119) == {
        2: "message larger than 1,048,576 bytes",
        3: "properties.products has more than 119 items",
        4: "properties.products has more than 119 items",
        5: "properties.products has more than 119 items"}


def test_a_line_of_letters_v_is_not_blank(tmp_path: Path) -> None:
    """DuckDB's E'' strings have no \\v: `E'...\\v'` is the letter v, so a line "v" was
    skipped as blank and a userId "v" read as missing."""
    path = tmp_path / "v.ndjson"
    path.write_text('v\n\x0b\n{"type": "page", "userId": "v", "timestamp": "2026-03-01"}\n')
    con = duckdb.connect()
    result = Loader(con).load([path])
    assert (result.lines_read, result.loaded, result.rejected) == (2, 1, 1)
    assert con.execute("select user_id from raw_events").fetchall() == [("v",)]
    assert con.execute("select line_number, raw from raw_rejected").fetchall() == [(1, "v")]


def test_deep_nesting_read_again_in_python_is_rejected_not_a_crash(tmp_path: Path) -> None:
    """Lines Python reads again (strictness, repeated keys) may nest deeper than its parser
    recurses; such a line is rejected with a reason and the load goes on."""
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.ndjson"
    path.write_text(
        '{"type": "page", "userId": "u", "timestamp": "2026-03-01", "note": "NaN", '
        f'"deep": {deep}}}\n'
        '{"type": "page", "userId": "u", "userId": "w", "timestamp": "2026-03-01", '
        f'"deep": {deep}}}\n'
        '{"type": "page", "userId": "u", "timestamp": "2026-03-01"}\n')
    con = duckdb.connect()
    result = Loader(con).load([path])
    assert (result.lines_read, result.loaded, result.rejected) == (3, 1, 2)
    assert con.execute("select line_number, reason from raw_rejected order by 1").fetchall() == [
        (1, "JSON nested too deeply"), (2, "JSON nested too deeply")]


def test_one_file_is_one_source_file_however_it_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`../x/events.ndjson` from one folder, `x/./events.ndjson` from another and the absolute
    path name one file: its rejected line is one row of rejected_events, not three."""
    project = ProjectHarness(tmp_path / "project")
    data = tmp_path / "data"
    (data / "x").mkdir(parents=True)
    (data / "y").mkdir()
    events = data / "x" / "events.ndjson"
    events.write_text('{"type": "page", "userId": "u", "timestamp": "2026-03-01"}\n'
                      "not json\n")
    monkeypatch.chdir(data / "y")
    project.ingest("../x/events.ndjson")
    monkeypatch.chdir(data)
    ran = run_arpu(project.root, "ingest", "x/./events.ndjson")  # a process in another folder
    assert ran.returncode == 0, ran.stderr
    project.ingest(events.resolve())
    assert project.build(["rejected_events"]).success
    (rejected,) = project.rows("rejected_events")
    assert (rejected["source_file"], rejected["line_number"]) == (str(events.resolve()), 2)
    with project.context() as ctx:
        assert ctx.engine().fetch("select distinct source_file from raw_loads")[1] == [
            (str(events.resolve()),)]
