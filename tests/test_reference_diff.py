"""The product against the plain-Python reference, relation by relation, row by row.

Random small Segment streams (hypothesis) plus the hand fixtures and Segment's published example
payloads go through both; counts must match exactly and money and rates to 1e-9 relative
(p-values and intervals to 1e-6). Invariants that need no reference are asserted on the side.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

try:
    from tests.reference import compute
    from tests.reference.harness import COLUMNS, diff_relation, message_ids, read_lines
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from reference import compute  # type: ignore[no-redef]
    from reference.harness import (  # type: ignore[no-redef]
        COLUMNS,
        diff_relation,
        message_ids,
        read_lines,
    )

FIXTURES = Path(__file__).parent / "fixtures"
RELATIONS = tuple(COLUMNS)


@pytest.fixture
def new_project(arpu_project, tmp_path_factory):
    """A factory of fresh projects (one per hypothesis example), built like `arpu_project`."""
    harness = type(arpu_project)
    return lambda: harness(tmp_path_factory.mktemp("diff") / "project")


def product_relations(project) -> dict[str, list[dict]]:
    if hasattr(project, "context"):  # one connection for all thirteen reads: ~10x faster
        with project.context() as ctx:
            return {rel: ctx.rows(rel, None) for rel in RELATIONS}
    return {rel: project.rows(rel) for rel in RELATIONS}


def assert_same(product: dict[str, list[dict]], lines_by_file: dict[str, list[str]],
                vars: dict | None = None, context: str = "") -> None:
    reference = compute(lines_by_file, vars)
    ids = message_ids(lines_by_file)
    problems = []
    for rel in RELATIONS:
        problems += diff_relation(rel, product[rel], reference[rel], real_ids=ids)
    assert not problems, context + "\n" + "\n".join(problems[:40])


def _absent_values(lines_by_file: dict[str, list[str]], vars: dict) -> list[str]:
    """The vars naming a category or variant that the reference's relations do not have."""
    reference = compute(lines_by_file, {k: v for k, v in vars.items()
                                         if k not in ("target_category", "control_variant")})
    have = {"target_category": {r["category"] for r in reference["category_opportunities"]},
            "control_variant": {r["variant"] for r in reference["experiment_results"]}}
    return [var for var, values in have.items() if vars.get(var) is not None
            and vars[var] not in values]


def assert_invariants(rel: dict[str, list[dict]]) -> None:
    for name in ("category_funnel", "category_conversion_timeseries", "experiment_results"):
        for r in rel[name]:
            if r["conversion_rate"] is not None:
                assert 0 <= float(r["conversion_rate"]) <= 1, (name, r)
    for name in ("category_funnel", "category_conversion_timeseries"):
        for r in rel[name]:
            assert r["purchasers"] <= r["viewers"], (name, r)
    assert sum(r["product_count"] for r in rel["fct_orders"]) == len(rel["fct_product_purchases"])
    for r in rel["arpu_timeseries"]:
        assert r["active_users"] > 0 and float(r["arpu"]) >= 0
        if r["segment"] == "all":
            assert math.isclose(float(r["arpu"]), float(r["revenue"]) / r["active_users"],
                                rel_tol=1e-9, abs_tol=1e-12)


def _comparable(rel: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Rows as sortable text; floats to 12 significant digits (1e-9 relative and better), as
    everywhere else here: a float aggregate (var_samp, sum) depends on the order the engine
    meets its rows, which a hash aggregate does not fix, so the last bits may differ between
    two builds of the same data."""
    out = {}
    for name, rows in rel.items():
        cols = [c for c in COLUMNS[name] if c != "event_id" or name != "stg_events"]
        out[name] = sorted(repr([float(f"{v:.12g}") if isinstance(v, float) else v
                                 for v in (r[c] for c in cols)]) for r in rows)
    return out


# ---------------------------------------------------------------- random Segment streams

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
prices = st.sampled_from([None, 0, 5, 12.5, 100, "20", "7.25"])
quantities = st.sampled_from(["absent", None, 1, 2, "3"])


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
                props["revenue"] = None
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


# Each example builds a whole project, so shrinking a failure can take many minutes: it is off
# unless ARPU_SHRINK=1 (the failure message prints the full stream and vars either way).
# ARPU_DIFF_EXAMPLES=500 runs a longer soak than the default 25 examples.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("ARPU_SHRINK") == "1" else [])


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("ARPU_DIFF_EXAMPLES", "25")), deadline=None,
          phases=PHASES, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(stream=streams())
def test_random_streams_match_reference(new_project, tmp_path_factory, stream):
    lines, vars, twice = stream
    path = tmp_path_factory.mktemp("stream") / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    project = new_project()
    res = project.ingest(path)
    assert res.lines_read == res.loaded + res.rejected
    missing = _absent_values({str(path): read_lines(path)}, vars)
    if missing:  # SPEC section 3: a named value the data does not have fails the build
        result = project.build(**vars)
        errors = " ".join(r.error or "" for r in result.results if r.status == "error")
        assert not result.success
        for var in missing:
            assert f"var {var}: {vars[var]!r} is not in the data" in errors, errors
        vars = {k: v for k, v in vars.items() if k not in missing}
    assert project.build(**vars).success
    product = product_relations(project)
    assert_same(product, {str(path): read_lines(path)}, vars,
                f"vars={vars}\n" + "\n".join(lines))
    assert_invariants(product)
    if not twice:  # a third of the examples: the second ingest and build double the time
        return
    # ingesting the same file again changes no output
    project.ingest(path)
    assert project.build(**vars).success
    assert _comparable(product_relations(project)) == _comparable(product)


# ---------------------------------------------------------------- fixed inputs

# strict_edges.ndjson is left out: test_semantics pins its contested readings on its own
HAND_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.ndjson")
                       if p.name != "strict_edges.ndjson") + ["batch_payload.json"]
VAR_SETS = [
    {},
    {"conversion_window_days": 1, "funnel_reentry": True, "promo_start": "2026-03-10"},
    {"start_date": "2026-03-02", "end_date": "2026-03-09", "target_category": "Games",
     "experiment_window_days": 10, "control_variant": "treatment"},
]


@pytest.mark.parametrize("vars", VAR_SETS, ids=["defaults", "reentry-promo", "range-target"])
def test_hand_fixtures_together_match_reference(arpu_project, vars):
    paths = [FIXTURES / name for name in HAND_FIXTURES]
    res = arpu_project.ingest(*paths)
    assert res.lines_read == res.loaded + res.rejected
    assert arpu_project.build(**vars).success
    product = product_relations(arpu_project)
    assert_same(product, {str(p): read_lines(p) for p in paths}, vars)
    assert_invariants(product)


def test_segment_examples_match_reference(arpu_project, segment_examples):
    paths = segment_examples
    res = arpu_project.ingest(*paths)
    assert res.lines_read == res.loaded + res.rejected
    assert arpu_project.build().success
    assert_same(product_relations(arpu_project), {str(p): read_lines(p) for p in paths})
