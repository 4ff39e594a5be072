"""Random small Segment streams (hypothesis): people viewing, ordering and identifying across
week starts and the end of February, exposures, duplicates and bad lines, with random vars.
The property tests of the reference diff and of incremental builds draw from them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

BASE = datetime(2026, 2, 20)  # a Friday: streams cross week starts and the end of February
CATEGORIES = ["Books", "Games", "Home Supplies"]
EXPERIMENTS = ["e1", "e2"]
VARIANTS = ["control", "treatment", "control", "treatment", "b"]  # "b" rarely
BAD_LINES = [
    '{"type": "track", "event": "X", "userId": "u0",}',
    '{"type": "track", "userId": "u0", "timestamp": "2026-02-21T00:00:00Z", '
    '"properties": {"price": NaN}}',
    '[]',
    '{"type": "page", "userId": "u0"}',
    '{"type": "track", "event": "Order Completed", "userId": "u0", '
    '"timestamp": "2026-02-21T00:00:00Z", "properties": {"products": [{"price": -1}]}}',
    '{"type": "track", "event": "Product Viewed", "anonymousId": "", '
    '"timestamp": "2026-02-21T00:00:00Z"}',
]

times = st.builds(
    lambda d, h, s: BASE + timedelta(days=d, seconds=h + s),
    st.integers(0, 20), st.sampled_from([0, 36000, 86399]), st.sampled_from([0, 0, 1]),
)
# "" and " \t" are missing (SPEC section 1): no price, a quantity of 1
prices = st.sampled_from([None, 0, 5, 12.5, 100, "20", "7.25", "", " \t"])
quantities = st.sampled_from(["absent", None, 1, 2, "3", ""])


def _render_time(t: datetime, style: int) -> str:
    if style == 1:
        return (t + timedelta(hours=2)).isoformat(timespec="milliseconds") + "+02:00"
    if style == 2:
        return (t - timedelta(hours=5)).isoformat() + "-05:00"
    return t.isoformat(timespec="milliseconds") + "Z"


@st.composite
def streams(draw: Any) -> tuple[list[str], dict, bool]:
    """(ndjson lines, vars, whether to also check a second ingest of the same file)."""
    people = draw(st.integers(1, 6))
    person = st.integers(0, people - 1)
    window = draw(st.sampled_from([1, 7]))
    messages: list[dict] = []  # emitted message objects (before duplication)
    lines: list[str] = []
    views: list[tuple[dict, datetime, str | None]] = []
    serial = 0

    def ids(mode: str, p: int) -> dict:
        if mode == "user":
            return {"userId": f"u{p}"}
        if mode == "anon":
            return {"anonymousId": f"a{p}"}
        return {"userId": f"u{draw(person)}", "anonymousId": f"a{p}"}

    def emit(body: dict, t: datetime, both: bool, message_id: bool = True) -> dict:
        nonlocal serial
        serial += 1
        if both:  # identity links never tie on event time
            t = t + timedelta(milliseconds=serial)
        msg = dict(body)
        if message_id:
            msg["messageId"] = f"m{serial:03d}"
        field = draw(st.sampled_from(["timestamp", "timestamp", "timestamp", "originalTimestamp",
                                      "receivedAt"]))
        msg[field] = _render_time(t, draw(st.integers(0, 2)))
        if field != "receivedAt" and draw(st.booleans()):
            msg["receivedAt"] = _render_time(t + timedelta(seconds=draw(st.integers(0, 3))), 0)
        messages.append(msg)
        lines.append(json.dumps(msg))
        return msg

    def product() -> dict:
        prod = {"product_id": f"p{draw(st.integers(0, 3))}"}
        category = draw(st.sampled_from(CATEGORIES + [None, "absent"]))
        if category != "absent":
            prod["category"] = category
        prod["price"] = draw(prices)
        quantity = draw(quantities)
        if quantity != "absent":
            prod["quantity"] = quantity
        return prod

    def order(p: int, mode: str, t: datetime, products: list[dict]) -> None:
        props: dict = {"order_id": f"o{draw(st.integers(0, 5))}", "currency": "USD",
                       "products": products}
        how = draw(st.sampled_from(["sum", "revenue", "total", "revenue_null"]))
        if how == "revenue":
            props["revenue"] = draw(st.sampled_from([0, 30, "45.5"]))
        elif how in ("total", "revenue_null"):
            props["total"] = 60
            if how == "revenue_null":
                props["revenue"] = draw(st.sampled_from([None, "", " "]))
        emit({"type": "track", "event": "Order Completed", **ids(mode, p), "properties": props},
             t, mode == "both")

    kinds = ["view", "view", "view", "order", "order", "order", "boundary", "identify", "page",
             "page", "exposure", "exposure", "ab_block", "dup", "bad", "blank"]
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(kinds))
        p, mode, t = draw(person), draw(st.sampled_from(["user", "anon", "both"])), draw(times)
        if kind == "view":
            props: dict = {"product_id": "p1", "price": draw(prices)}
            category = draw(st.sampled_from(CATEGORIES + [None]))
            if category is not None:
                props["category"] = category
            emit({"type": "track", "event": "Product Viewed", **ids(mode, p),
                  "properties": props}, t, mode == "both")
            views.append((ids(mode, p) if mode != "both" else {"userId": f"u{p}"}, t, category))
        elif kind == "order":
            order(p, mode, t, draw(st.lists(st.builds(dict), max_size=3).map(
                lambda xs: [product() for _ in xs])))
        elif kind == "boundary" and views:
            # a purchase right at (or a second around) the end of some view's window
            who, seen_at, category = draw(st.sampled_from(views))
            delta = timedelta(days=window, seconds=draw(st.sampled_from([-1, 0, 0, 1])))
            mode = "user" if "userId" in who else "anon"
            p = int(next(iter(who.values()))[1:])
            order(p, mode, seen_at + delta, [{"product_id": "p1", "category": category,
                                             "price": 10}])
        elif kind == "identify":
            traits = {"email": draw(st.sampled_from([None, f"p{p}-{serial}@example.com"])),
                      "phone": draw(st.sampled_from([None, "absent", f"+1555{serial:04d}"]))}
            traits = {k: v for k, v in traits.items() if v != "absent"}
            emit({"type": "identify", "userId": f"u{p}", "anonymousId": f"a{p}",
                  "traits": traits}, t, True)
        elif kind == "page":
            with_id = draw(st.booleans())
            emit({"type": draw(st.sampled_from(["page", "screen"])),
                  **ids("user" if draw(st.booleans()) else "anon", p)},
                 t + timedelta(milliseconds=500), False, message_id=with_id)
        elif kind == "exposure":
            exp, variant = draw(st.sampled_from(EXPERIMENTS)), draw(st.sampled_from(VARIANTS))
            style = draw(st.integers(0, 2))
            if style == 2:
                body = {"event": "$experiment_started",
                        "properties": {"Experiment name": exp, "Variant name": variant}}
            elif style == 1:
                body = {"event": "Experiment Viewed",
                        "properties": {"experiment_name": exp, "variation_name": variant}}
            else:
                body = {"event": "Experiment Viewed",
                        "properties": {"experiment_id": exp, "variation_id": variant}}
            emit({"type": "track", **ids("user", p), **body}, t, False)
        elif kind == "ab_block":
            # everybody into one experiment, alternating arms, some buying soon after
            exp, shift = draw(st.sampled_from(EXPERIMENTS)), draw(st.integers(0, 1))
            for q in range(people):
                seen_at = t + timedelta(minutes=q)
                variant = ("control", "treatment")[(q + shift) % 2]
                emit({"type": "track", "userId": f"u{q}", "event": "Experiment Viewed",
                      "properties": {"experiment_id": exp, "variation_id": variant}},
                     seen_at, False)
                if draw(st.booleans()):
                    emit({"type": "track", "event": "Order Completed", "userId": f"u{q}",
                          "properties": {"order_id": f"ab{serial}", "products": [],
                                         "revenue": draw(st.sampled_from([10, 25, 40]))}},
                         seen_at + timedelta(days=draw(st.integers(0, 3))), False)
        elif kind == "dup" and messages:
            original = draw(st.sampled_from(messages))
            copy = dict(original)
            if "messageId" in copy and draw(st.booleans()):
                # a re-delivery: other receivedAt (maybe earlier), maybe other content
                copy["receivedAt"] = _render_time(
                    BASE + timedelta(days=draw(st.integers(0, 25))), 0)
                if copy.get("event") == "Product Viewed":
                    copy["properties"] = dict(copy["properties"], product_id="p-redelivered")
            lines.append(json.dumps(copy))
        elif kind == "bad":
            lines.append(draw(st.sampled_from(BAD_LINES)))
        elif kind == "blank":
            lines.append("")

    vars: dict = {"conversion_window_days": window}
    if draw(st.booleans()):
        vars["funnel_reentry"] = True
    if draw(st.integers(0, 3)) == 0:
        vars["start_date"] = (BASE + timedelta(days=draw(st.integers(0, 8)))).date().isoformat()
    if draw(st.integers(0, 3)) == 0:
        vars["end_date"] = (BASE + timedelta(days=draw(st.integers(9, 21)))).date().isoformat()
    if draw(st.integers(0, 2)) == 0:
        vars["promo_start"] = (BASE + timedelta(days=draw(st.integers(3, 15)))).date().isoformat()
    if draw(st.integers(0, 3)) == 0:
        vars["target_category"] = draw(st.sampled_from(CATEGORIES))
    if draw(st.integers(0, 3)) == 0:
        vars["control_variant"] = "treatment"
    if draw(st.integers(0, 3)) == 0:
        vars["experiment_window_days"] = 2
    return lines, vars, draw(st.integers(0, 2)) == 0
