"""SPEC section 2 in plain Python: every output relation from a dict of file lines.

Written from SPEC.md alone, with no SQL and no duckdb, as the second implementation that the
product is compared with. Readings of points SPEC leaves open (agreed with the runner's author):

- the analysis range [start_date, end_date) limits funnel entry views, price-stat lines, ARPU
  activity and orders, conversion-timeseries views and experiment exposures; `fct_*` and
  `dim_users` cover everything, and a purchase converting a funnel may fall after end_date;
- orders: earliest `Order Completed` per order_id by event time (then load and line order, the
  SPEC's tie rule, as for stitching and traits: receivedAt decides only between copies of one
  message); an order without order_id
  (or with a blank one) is keyed by its event_id;
- funnel with re-entry: a user converts at the earliest purchase p with an in-range view v,
  v <= p <= v + window; the entry is then the latest in-range view <= p;
- the cohort with promo_start: views and purchases strictly before promo_start;
- medians are continuous (mean of the two middle values);
- experiments: exposures in range; a variant is a row only when an included user saw it (one
  that only excluded users saw has none and is never the control); arpu_uplift = arpu /
  control_arpu - 1, null wherever the control's ARPU is 0 or null; control = control_variant if
  the experiment has it, else "control", else the smallest variant; uplift, p-values and CI null
  on the control row, p-values and CI also when the standard error is 0 or undefined (sample
  variance needs n >= 2 per arm; the pooled conversion test needs n >= 1 per arm).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from .ingest import Message, dedupe, load, parse_iso, text_value

BLANK = " \t\n\v\f\r"  # a string of only these is missing (SPEC section 1)

RELATIONS = (
    "stg_events", "fct_orders", "fct_product_purchases", "fct_product_views", "dim_users",
    "category_funnel", "category_price_stats", "category_opportunities", "cohort_non_converted",
    "arpu_timeseries", "category_conversion_timeseries", "experiment_results", "rejected_events",
)
GRAINS = ("day", "week", "month")
SEGMENTS = ("all", "cohort", "non_cohort")
ACTIVE_TYPES = ("track", "page", "screen")
Z_975 = 1.959964


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def field(value: Any) -> str | None:
    """A text field the SPEC reads (category, order_id, experiment and variant, traits, ...):
    missing (None) when absent, null, empty or only whitespace; else its exact text."""
    text = text_value(value)
    return None if text is None or text.strip(BLANK) == "" else text


def _moment(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    parsed = parse_iso(str(value))
    if parsed is None:
        raise ValueError(f"not an ISO date: {value!r}")
    return parsed


@dataclass(frozen=True)
class Vars:
    start: datetime | None = None
    end: datetime | None = None
    window: timedelta = timedelta(days=7)
    reentry: bool = False
    promo_start: datetime | None = None
    target_category: str | None = None
    experiment_window: timedelta = timedelta(days=30)
    control_variant: str | None = None

    @classmethod
    def from_dict(cls, values: dict | None) -> Vars:
        v = values or {}
        return cls(
            start=_moment(v.get("start_date")),
            end=_moment(v.get("end_date")),
            window=timedelta(days=int(v.get("conversion_window_days", 7))),
            reentry=_truthy(v.get("funnel_reentry", False)),
            promo_start=_moment(v.get("promo_start")),
            target_category=v.get("target_category"),
            experiment_window=timedelta(days=int(v.get("experiment_window_days", 30))),
            control_variant=v.get("control_variant"),
        )

    def in_range(self, ts: datetime) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)


def _recency(m: Message) -> tuple:
    """Order of 'latest' among messages: event time, then load and line (SPEC's Ties;
    load_index counts the accepted messages of every file, in load order)."""
    return (m.event_ts, m.load_index)


def _earliness(m: Message) -> tuple:
    """Order of 'earliest' among copies of an order: event time, then load and line."""
    return (m.event_ts, m.load_index)


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(statistics.median(values)) if values else None


def sql_rank(rows: list[dict], key: str, out: str) -> None:
    """RANK() OVER (ORDER BY key DESC NULLS LAST) into row[out]."""
    ordered = sorted(rows, key=lambda r: (r[key] is None, -(r[key] or 0)))
    for i, row in enumerate(ordered):
        prev = ordered[i - 1] if i else None
        same = prev is not None and prev[key] == row[key]
        row[out] = prev[out] if same else i + 1


def period_start(ts: datetime, grain: str) -> date:
    d = ts.date()
    if grain == "day":
        return d
    if grain == "week":
        return d - timedelta(days=d.weekday())
    return d.replace(day=1)


def _stitch(messages: list[Message]) -> None:
    latest: dict[str, Message] = {}
    for m in messages:
        if m.user_id is not None and m.anonymous_id is not None:
            cur = latest.get(m.anonymous_id)
            if cur is None or _recency(m) > _recency(cur):
                latest[m.anonymous_id] = m
    for m in messages:
        if m.user_id is not None:
            m.user_key = m.user_id
        elif m.anonymous_id in latest:
            m.user_key = latest[m.anonymous_id].user_id  # type: ignore[assignment]
        else:
            m.user_key = m.anonymous_id  # type: ignore[assignment]


def _is_track(m: Message, event: str) -> bool:
    return m.type == "track" and m.event == event


def convert(views: list[datetime], purchases: list[datetime], window: timedelta,
            reentry: bool) -> tuple[datetime, datetime | None]:
    """(entry, first converting purchase or None) for one user and category; inputs sorted."""
    if reentry:
        for p in purchases:
            before = [v for v in views if v <= p]
            if before and p <= before[-1] + window:
                return before[-1], p
        return views[0], None
    e = views[0]
    for p in purchases:
        if e <= p <= e + window:
            return e, p
    return e, None


def _index(pairs: Iterable[tuple[str, str, datetime]]) -> dict[str, dict[str, list[datetime]]]:
    """(category, user, ts) -> {category: {user: sorted [ts]}}."""
    out: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    for cat, user, ts in pairs:
        out[cat][user].append(ts)
    for users in out.values():
        for times in users.values():
            times.sort()
    return out


def _funnel(views: dict, purchases: dict, window: timedelta, reentry: bool) -> dict:
    """{category: {user: (entry, purchase or None)}} for every user with a view."""
    return {
        cat: {
            user: convert(times, purchases.get(cat, {}).get(user, []), window, reentry)
            for user, times in users.items()
        }
        for cat, users in views.items()
    }


def compute(lines_by_file: dict[str, list[str]], vars: dict | None = None) -> dict[str, list[dict]]:
    """Every relation of SPEC section 2, as lists of dicts with the SPEC's column names."""
    v = Vars.from_dict(vars)
    loaded = load(lines_by_file)
    msgs = dedupe(loaded.messages)
    _stitch(msgs)
    out: dict[str, list[dict]] = {}

    out["rejected_events"] = [dict(r, loaded_at=None) for r in loaded.rejected]
    out["stg_events"] = [
        dict(event_id=m.event_id, event_name=m.event if m.type == "track" else m.type,
             type=m.type, user_key=m.user_key, user_id=m.user_id, anonymous_id=m.anonymous_id,
             event_ts=m.event_ts, received_at=m.received_at, properties=m.properties)
        for m in msgs
    ]

    # --- orders and their lines
    counted: dict[str, Message] = {}
    for m in msgs:
        if _is_track(m, "Order Completed"):
            order_id = field(m.properties.get("order_id")) or m.event_id
            cur = counted.get(order_id)
            if cur is None or _earliness(m) < _earliness(cur):
                counted[order_id] = m
    orders, lines = [], []
    for order_id, m in counted.items():
        priced = 0.0
        for i, product in enumerate(m.products or []):
            product = product if isinstance(product, dict) else {}
            nums = m.product_numbers[i]
            price = nums["price"]
            quantity = nums["quantity"] if nums["quantity"] is not None else 1.0
            line_revenue = price * quantity if price is not None else None
            priced += line_revenue or 0.0
            lines.append(dict(
                order_id=order_id, line_number=i + 1, user_key=m.user_key,
                purchased_at=m.event_ts, product_id=field(product.get("product_id")),
                sku=field(product.get("sku")), category=field(product.get("category")),
                name=field(product.get("name")), price=price, quantity=quantity,
                line_revenue=line_revenue,
            ))
        revenue = m.numbers["revenue"]
        if revenue is None:
            revenue = m.numbers["total"]
        if revenue is None:
            revenue = priced
        orders.append(dict(
            order_id=order_id, user_key=m.user_key, ordered_at=m.event_ts, revenue=revenue,
            currency=field(m.properties.get("currency")),
            product_count=len(m.products or []),
        ))
    out["fct_orders"] = orders
    out["fct_product_purchases"] = lines
    views = [
        dict(event_id=m.event_id, user_key=m.user_key, viewed_at=m.event_ts,
             product_id=field(m.properties.get("product_id")),
             category=field(m.properties.get("category")), price=m.numbers["price"])
        for m in msgs if _is_track(m, "Product Viewed")
    ]
    out["fct_product_views"] = views

    # --- users
    users: dict[str, dict] = {}
    traits_by_user: dict[str, dict[str, tuple]] = defaultdict(dict)
    for m in msgs:
        u = users.setdefault(m.user_key, dict(user_key=m.user_key, first_seen_at=m.event_ts,
                                              last_seen_at=m.event_ts, email=None, phone=None))
        u["first_seen_at"] = min(u["first_seen_at"], m.event_ts)
        u["last_seen_at"] = max(u["last_seen_at"], m.event_ts)
        traits = m.obj.get("traits")
        if m.type == "identify" and isinstance(traits, dict):
            for trait in ("email", "phone"):
                value = field(traits.get(trait))
                best = traits_by_user[m.user_key].get(trait)
                if value is not None and (best is None or _recency(m) > best[0]):
                    traits_by_user[m.user_key][trait] = (_recency(m), value)
    for key, traits in traits_by_user.items():
        for trait, (_, value) in traits.items():
            users[key][trait] = value
    out["dim_users"] = list(users.values())

    # --- category funnel
    cat_views = [w for w in views if w["category"] is not None]
    cat_lines = [ln for ln in lines if ln["category"] is not None]
    views_idx = _index((w["category"], w["user_key"], w["viewed_at"])
                       for w in cat_views if v.in_range(w["viewed_at"]))
    purch_idx = _index((ln["category"], ln["user_key"], ln["purchased_at"]) for ln in cat_lines)
    funnel = _funnel(views_idx, purch_idx, v.window, v.reentry)
    out["category_funnel"] = []
    for cat in sorted(funnel):
        results = funnel[cat].values()
        converted = [(p - e).total_seconds() for e, p in results if p is not None]
        out["category_funnel"].append(dict(
            category=cat, viewers=len(results), purchasers=len(converted),
            conversion_rate=len(converted) / len(results),
            median_time_to_convert_s=median(converted),
        ))

    # --- price stats
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for ln in cat_lines:
        if v.in_range(ln["purchased_at"]):
            by_cat[ln["category"]].append(ln)
    stats = []
    for cat in sorted(by_cat):
        rows = by_cat[cat]
        priced = [ln for ln in rows if ln["price"] is not None]
        priced_units = sum(ln["quantity"] for ln in priced)
        stats.append(dict(
            category=cat, purchased_lines=len(rows), orders=len({ln["order_id"] for ln in rows}),
            units=sum(ln["quantity"] for ln in rows),
            revenue=sum(ln["line_revenue"] for ln in priced),
            avg_item_price=(sum(ln["price"] for ln in priced) / len(priced)) if priced else None,
            avg_unit_price=(sum(ln["line_revenue"] for ln in priced) / priced_units
                            if priced and priced_units else None),
        ))
    sql_rank(stats, "purchased_lines", "order_rank")
    out["category_price_stats"] = stats

    # --- opportunities
    price_of = {s["category"]: s["avg_item_price"] for s in stats}
    opps = []
    for f in out["category_funnel"]:
        price = price_of.get(f["category"])
        non_converted = f["viewers"] - f["purchasers"]
        opps.append(dict(
            category=f["category"], conversion_rate=f["conversion_rate"], avg_item_price=price,
            viewers=f["viewers"], non_converted=non_converted,
            revenue_at_stake=non_converted * price if price is not None else None,
        ))
    median_rate = median(o["conversion_rate"] for o in opps)
    median_price = median(o["avg_item_price"] for o in opps if o["avg_item_price"] is not None)
    for o in opps:
        o["low_conversion"] = o["conversion_rate"] < median_rate
        o["high_price"] = (o["avg_item_price"] >= median_price
                           if o["avg_item_price"] is not None else None)
    sql_rank(opps, "revenue_at_stake", "rank")
    out["category_opportunities"] = opps

    # --- cohort
    if v.promo_start is not None:
        promo = v.promo_start
        c_views = _index((w["category"], w["user_key"], w["viewed_at"]) for w in cat_views
                         if v.in_range(w["viewed_at"]) and w["viewed_at"] < promo)
        c_purch = _index((ln["category"], ln["user_key"], ln["purchased_at"]) for ln in cat_lines
                         if ln["purchased_at"] < promo)
        c_funnel = _funnel(c_views, c_purch, v.window, v.reentry)
    else:
        c_views, c_funnel = views_idx, funnel
    cohort = []
    for cat in sorted(c_funnel):
        for user in sorted(c_funnel[cat]):
            if c_funnel[cat][user][1] is None:
                times = c_views[cat][user]
                cohort.append(dict(
                    category=cat, user_key=user, first_viewed_at=times[0],
                    last_viewed_at=times[-1], views=len(times),
                    email=users[user]["email"], phone=users[user]["phone"],
                ))
    out["cohort_non_converted"] = cohort

    # --- target category and segments
    target = v.target_category
    if target is None:
        top = sorted(o["category"] for o in opps if o["rank"] == 1)
        target = top[0] if top else None
    members = {c["user_key"] for c in cohort if c["category"] == target}

    def in_segment(user: str, segment: str) -> bool:
        return segment == "all" or (user in members) == (segment == "cohort")

    # --- arpu timeseries
    active: dict[tuple, set] = defaultdict(set)
    for m in msgs:
        if m.type in ACTIVE_TYPES and v.in_range(m.event_ts):
            for grain in GRAINS:
                active[(grain, period_start(m.event_ts, grain))].add(m.user_key)
    order_rev: dict[tuple, list[tuple[str, float]]] = defaultdict(list)
    for o in orders:
        if v.in_range(o["ordered_at"]):
            for grain in GRAINS:
                order_rev[(grain, period_start(o["ordered_at"], grain))].append(
                    (o["user_key"], o["revenue"]))
    arpu_rows = []
    for (grain, start), period_users in sorted(active.items()):
        for segment in SEGMENTS:
            seg_users = {u for u in period_users if in_segment(u, segment)}
            if not seg_users:
                continue
            seg_orders = [(u, r) for u, r in order_rev.get((grain, start), [])
                          if in_segment(u, segment)]
            revenue = float(sum(r for _, r in seg_orders))
            buyers = len({u for u, _ in seg_orders})
            arpu_rows.append(dict(
                grain=grain, period_start=start, segment=segment, revenue=revenue,
                active_users=len(seg_users), purchasers=buyers,
                arpu=revenue / len(seg_users), arppu=revenue / buyers if buyers else None,
            ))
    out["arpu_timeseries"] = arpu_rows

    # --- conversion timeseries
    per_period: dict[tuple, list[bool]] = defaultdict(list)
    for cat, cat_users in views_idx.items():
        for user, times in cat_users.items():
            purchases = purch_idx.get(cat, {}).get(user, [])
            for grain in GRAINS:
                by_period: dict[date, list[datetime]] = defaultdict(list)
                for t in times:
                    by_period[period_start(t, grain)].append(t)
                for start, period_views in by_period.items():
                    converted = convert(period_views, purchases, v.window, v.reentry)[1] is not None
                    for segment in SEGMENTS:
                        if in_segment(user, segment):
                            per_period[(grain, start, segment, cat)].append(converted)
    out["category_conversion_timeseries"] = [
        dict(grain=g, period_start=s, segment=seg, category=cat, viewers=len(flags),
             purchasers=sum(flags), conversion_rate=sum(flags) / len(flags))
        for (g, s, seg, cat), flags in sorted(per_period.items())
    ]

    out["experiment_results"] = _experiments(msgs, orders, v)
    return out


def _exposure(m: Message) -> tuple[str | None, str | None] | None:
    p = m.properties
    if _is_track(m, "Experiment Viewed"):
        exp = field(p.get("experiment_id")) or field(p.get("experiment_name"))
        var = field(p.get("variation_id")) or field(p.get("variation_name"))
        return exp, var
    if _is_track(m, "$experiment_started"):
        return field(p.get("Experiment name")), field(p.get("Variant name"))
    return None


def _sample_var(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def _experiments(msgs: list[Message], orders: list[dict], v: Vars) -> list[dict]:
    from scipy.stats import norm

    first: dict[tuple[str, str], datetime] = {}
    seen: dict[tuple[str, str], set] = defaultdict(set)
    for m in msgs:
        exposure = _exposure(m)
        if exposure is None or None in exposure or not v.in_range(m.event_ts):
            continue
        exp, variant = exposure
        key = (exp, m.user_key)
        first[key] = min(first.get(key, m.event_ts), m.event_ts)
        seen[key].add(variant)
    orders_by_user: dict[str, list[dict]] = defaultdict(list)
    for o in orders:
        orders_by_user[o["user_key"]].append(o)

    # a variant is an arm when an included user saw it; excluded users count in each arm they saw
    arms: dict[str, dict[str, dict]] = defaultdict(dict)
    for (exp, user), variants in seen.items():
        if len(variants) > 1:
            continue
        (variant,) = variants
        arm = arms[exp].setdefault(variant, dict(revenues=[], bought=[], excluded=0))
        x = first[(exp, user)]
        end = x + v.experiment_window
        window = [o for o in orders_by_user[user] if x <= o["ordered_at"] <= end]
        arm["revenues"].append(float(sum(o["revenue"] for o in window)))
        arm["bought"].append(bool(window))
    for (exp, _user), variants in seen.items():
        if len(variants) > 1:
            for variant in variants & arms.get(exp, {}).keys():
                arms[exp][variant]["excluded"] += 1

    rows = []
    for exp in sorted(arms):
        variants = sorted(arms[exp])
        if v.control_variant is not None and v.control_variant in variants:
            control = v.control_variant
        elif "control" in variants:
            control = "control"
        else:
            control = variants[0]
        c = arms[exp][control]
        nc = len(c["revenues"])
        c_arpu = sum(c["revenues"]) / nc if nc else None
        for variant in variants:
            a = arms[exp][variant]
            n = len(a["revenues"])
            revenue = float(sum(a["revenues"]))
            buyers = sum(a["bought"])
            arpu = revenue / n if n else None
            row = dict(
                experiment=exp, variant=variant, is_control=variant == control, users=n,
                excluded_users=a["excluded"], purchasers=buyers,
                conversion_rate=buyers / n if n else None, revenue=revenue, arpu=arpu,
                arpu_uplift=None, arpu_p_value=None, conversion_p_value=None,
                arpu_ci_low=None, arpu_ci_high=None,
            )
            if variant == control:  # nulls in uplift, p-values and CI
                rows.append(row)
                continue
            if arpu is not None and c_arpu:  # null when the control's ARPU is 0 or null
                row["arpu_uplift"] = arpu / c_arpu - 1
            if n >= 2 and nc >= 2:
                se = math.sqrt(_sample_var(a["revenues"]) / n + _sample_var(c["revenues"]) / nc)
                if se > 0:
                    diff = arpu - c_arpu  # type: ignore[operator]
                    row["arpu_p_value"] = float(2 * norm.sf(abs(diff / se)))
                    row["arpu_ci_low"] = diff - Z_975 * se
                    row["arpu_ci_high"] = diff + Z_975 * se
            if n >= 1 and nc >= 1:
                xc = sum(c["bought"])
                pooled = (buyers + xc) / (n + nc)
                se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / nc))
                if se > 0:
                    z = (buyers / n - xc / nc) / se
                    row["conversion_p_value"] = float(2 * norm.sf(abs(z)))
            rows.append(row)
    return rows
