"""Deterministic generator of the sample Segment e-commerce event stream.

Everything is generated in DuckDB SQL (no per-event Python) from hash-based pseudo-randomness,
``h(key, stream) = hash(hash(seed, stream, key))``, so the same ``(events, seed)`` always gives
the same bytes, whatever the number of threads. The data plants the story of the Mixpanel ARPU
recipe (see ``seeds/README.md``): eight categories priced alike, Home Supplies and Entertainment
converting worst, a promotion on Home Supplies from ``PROMO_START`` that lifts the
non-converted cohort, and an A/B test ``home_supplies_promo`` with a real ARPU lift.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

START_DATE = "2026-01-05"  # first day with data (a Monday)
END_DATE = "2026-04-06"  # first day without data: events fall in [START_DATE, END_DATE)
PROMO_START = "2026-03-09"  # the Home Supplies promotion and the experiment start (a Monday)
EXPERIMENT = "home_supplies_promo"
EXPERIMENT_NAME = "Home Supplies Promo"
CONTROL_VARIANT = "control"
TREATMENT_VARIANT = "promo"
TARGET_CATEGORY = "Home Supplies"
CURRENCY = "USD"
CONVERSION_WINDOW_DAYS = 7
EXPERIMENT_WINDOW_DAYS = 30


@dataclass(frozen=True)
class _Category:
    name: str
    code: str
    weight: float  # relative chance that a user browses the category
    conversion: float  # planted first-view -> purchase (7 days) conversion
    avg_price_cents: int  # planted mean item price of the catalogue (and of purchased lines)
    products: tuple[str, ...]


_CATALOG: tuple[_Category, ...] = (
    _Category("Electronics", "EL", 1.10, 0.62, 46390, (
        "Wireless Headphones", "4K Monitor", "Bluetooth Speaker", "Smartwatch", "Tablet",
        "Mechanical Keyboard", "Action Camera", "Noise-Cancelling Earbuds", "Portable Projector",
        "Gaming Mouse", "E-Reader", "Smart Home Hub")),
    _Category("Home Supplies", "HS", 1.05, 0.395, 46120, (
        "Robot Vacuum", "Air Purifier", "Cookware Set", "Bamboo Towel Set", "Stand Mixer",
        "Espresso Machine", "Linen Bedding Set", "Steam Mop", "Knife Block Set",
        "Storage Organizer Set", "Humidifier", "Cordless Iron")),
    _Category("Entertainment", "EN", 0.85, 0.397, 46050, (
        "Board Game Collection", "Record Player", "Streaming Stick", "Game Console",
        "Karaoke Machine", "Soundbar", "VR Headset", "Arcade Cabinet", "Movie Box Set", "Drone",
        "Jigsaw Puzzle Set", "Party Speaker")),
    _Category("Furniture", "FU", 0.42, 0.55, 45740, (
        "Office Chair", "Standing Desk", "Bookshelf", "Accent Chair", "Coffee Table", "Bed Frame",
        "TV Stand", "Dining Chair Set", "Floor Lamp", "Nightstand", "Ottoman", "Wardrobe")),
    _Category("Apparel", "AP", 0.38, 0.66, 44980, (
        "Wool Coat", "Running Shoes", "Leather Jacket", "Denim Jeans", "Cashmere Sweater",
        "Rain Jacket", "Dress Shoes", "Silk Scarf", "Hiking Boots", "Linen Shirt", "Puffer Vest",
        "Tailored Blazer")),
    _Category("Jewelry", "JW", 0.44, 0.52, 47160, (
        "Gold Necklace", "Silver Bracelet", "Diamond Studs", "Pearl Earrings", "Signet Ring",
        "Charm Bracelet", "Pendant", "Cufflinks", "Anklet", "Tennis Bracelet", "Hoop Earrings",
        "Watch Band")),
    _Category("Sports & Outdoors", "SP", 0.40, 0.58, 45530, (
        "Bike Helmet", "Camping Tent", "Kayak Paddle", "Yoga Mat Set", "Trekking Poles",
        "Sleeping Bag", "Dumbbell Set", "Fishing Rod", "Climbing Harness", "Golf Rangefinder",
        "Snowboard Bindings", "Rowing Machine")),
    _Category("Health & Beauty", "HB", 0.36, 0.69, 45270, (
        "Hair Dryer", "Electric Toothbrush", "Skincare Set", "Massage Gun", "Fragrance",
        "Curling Iron", "Smart Scale", "Facial Steamer", "Shaver", "LED Face Mask", "Makeup Kit",
        "Blood Pressure Monitor")),
)
# Products sold without a category (kept in fct_* relations, left out of category stats).
_UNCATEGORIZED: tuple[tuple[str, str, int], ...] = (
    ("Gift Card", "GC-050", 5000),
    ("Extended Warranty", "WTY-079", 7900),
    ("Gift Wrap", "GW-007", 699),
)
CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATALOG)

# Pairs of price offsets around the category mean (cents): every pair averages exactly to it.
_PRICE_OFFSETS = (30021, 22017, 15013, 9011, 4507, 1503)
_PRODUCTS_PER_CATEGORY = 2 * len(_PRICE_OFFSETS)

# Behaviour knobs (rates are planted exactly by stratified assignment where noted).
_HS_PROMO_CONVERSION = 0.52  # Home Supplies first-view conversion, promo arm, after PROMO_START
_LATE_PURCHASE = 0.10  # non-converted interest bought later, outside the 7-day window
_REPEAT_PURCHASE = 0.22  # converted interest bought again 10+ days later
_RETURN_RATE = 0.55  # pre-promo Home Supplies non-converters who come back after PROMO_START
_RETURN_BUY_PROMO = 0.80  # ... and buy Home Supplies on that visit, promo arm
_RETURN_BUY_CONTROL = 0.25  # ... control arm
_PROMO_BUNDLE = 0.60  # promo-arm Home Supplies orders after PROMO_START with a second item
_BOTH_VARIANTS = 0.015  # exposed users who later see the other variant too (excluded)
_DUPLICATE_RATE = 0.005
_BAD_LINES_PER_EVENT = 1e-4
_USERS_PER_EVENT = 0.085  # first guess of users per requested event; pages fill the rest

_GZIP_CHUNK = 64 << 20  # bytes per gzip member (fixed: the output must not depend on threads)

_MS_MIN = 60_000
_MS_HOUR = 3_600_000
_MS_DAY = 86_400_000


@dataclass(frozen=True)
class SeedStats:
    events: int  # messages written (valid JSON objects, duplicates included)
    lines: int  # physical non-blank lines in the file (events + bad lines)
    bad_lines: int
    duplicates: int  # extra copies of an existing messageId
    bytes: int
    seconds: float


def _epoch_ms(iso_date: str) -> int:
    d = date.fromisoformat(iso_date)
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _product_rows() -> list[tuple[int, int, str, str, str, str | None, int]]:
    """(category index, product index, product_id, sku, name, category, price in cents).

    Within a category products come in (low, high) pairs whose mean is the category's planted
    average price; purchased lines cycle through the products in this order.
    """
    rows: list[tuple[int, int, str, str, str, str | None, int]] = []
    for ci, cat in enumerate(_CATALOG):
        prices: list[int] = []
        for off in _PRICE_OFFSETS:
            low = cat.avg_price_cents - off
            prices += [low, 2 * cat.avg_price_cents - low]
        for pj, (name, price) in enumerate(zip(cat.products, prices, strict=True)):
            sku = f"{cat.code}-{pj + 1:03d}"
            pid = hashlib.md5(sku.encode()).hexdigest()[:24]
            rows.append((ci, pj, pid, sku, name, cat.name, price))
    for pj, (name, sku, price) in enumerate(_UNCATEGORIZED):
        pid = hashlib.md5(sku.encode()).hexdigest()[:24]
        rows.append((len(_CATALOG), pj, pid, sku, name, None, price))
    return rows


def _product_json(pid: str, sku: str, name: str, category: str | None) -> str:
    """The product's JSON members up to (not including) its price."""
    parts = [f'"product_id":{_json_str(pid)}', f'"sku":{_json_str(sku)}']
    if category is not None:
        parts.append(f'"category":{_json_str(category)}')
    parts.append(f'"name":{_json_str(name)}')
    return ",".join(parts)


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(_sql_str(s) for s in items) + "]"


_SLUGS = [c.name.lower().replace(" & ", "-").replace(" ", "-") for c in _CATALOG]
_OTHER_PAGES = [("Home", "/"), ("Search", "/search"), ("Deals", "/deals"), ("Account", "/account")]
_FIRST_NAMES = (
    "Ava", "Liam", "Mia", "Noah", "Zoe", "Ethan", "Lena", "Omar", "Iris", "Lucas", "Nora", "Ravi",
    "Sofia", "Mateo", "Chloe", "Kenji", "Amara", "Felix", "Hana", "Diego", "Maya", "Jonas",
    "Priya", "Leo", "Elena", "Tariq", "Yuki", "Sam", "Grace", "Ivan", "Lucia", "Ben")
_LAST_NAMES = (
    "Garcia", "Smith", "Chen", "Okafor", "Novak", "Rossi", "Kim", "Silva", "Nguyen", "Larsen",
    "Haddad", "Patel", "Moreau", "Sato", "Kowalski", "Brown", "Fischer", "Lopez", "Ivanova",
    "Mensah", "Murphy", "Cohen", "Dubois", "Tanaka", "Costa", "Berg", "Ali", "Walsh", "Reyes",
    "Singh", "Park", "Weber")


def _setup_sql(seed: int) -> list[str]:
    prods = ", ".join(
        f"({ci}, {pj}, {_sql_str(_product_json(pid, sku, name, cat))}, '{_money(cents)}', {cents})"
        for ci, pj, pid, sku, name, cat, cents in _product_rows()
    )
    cats = ", ".join(
        f"({ci}, {_sql_str(c.name)}, {c.weight}, {c.conversion})" for ci, c in enumerate(_CATALOG)
    )
    return [
        # hash(seed, b, a) only XORs hash(a) into a constant per (seed, b): hash it again so
        # that streams b are independent of each other.
        f"CREATE MACRO h(a, b) AS hash(hash({seed}, b, a))",
        "CREATE MACRO r(a, b) AS (h(a, b) >> 11)::DOUBLE / 9007199254740992.0",
        "CREATE MACRO ex(a, b) AS -ln(1.0 - r(a, b))",
        f"CREATE TABLE cat AS SELECT * FROM (VALUES {cats}) t(ci, name, weight, conv)",
        f"CREATE TABLE prod AS SELECT * FROM (VALUES {prods}) t(ci, pj, head, price, cents)",
    ]


def _core_sql(n_users: int) -> list[str]:
    """Tables users, interests, purchases, lines, core (every message but pages/duplicates)."""
    t0, t1, tp = _epoch_ms(START_DATE), _epoch_ms(END_DATE), _epoch_ms(PROMO_START)
    mi, hr, dy = _MS_MIN, _MS_HOUR, _MS_DAY
    hs = CATEGORIES.index(TARGET_CATEGORY)
    npc = _PRODUCTS_PER_CATEGORY
    ncat = len(_CATALOG)
    return [
        # Users arrive uniformly over the range; arm is fixed by hash (assignment on exposure).
        f"""CREATE OR REPLACE TABLE users AS
        SELECT u,
          {t0} + floor(r(u, 1) * ({t1 - t0} - 2 * {hr}))::BIGINT AS arrival,
          CASE WHEN r(u, 2) < 0.5 THEN 1 WHEN r(u, 2) < 0.8 THEN 2 ELSE 3 END AS n_int,
          r(u, 3) < 0.5 AS promo,
          r(u, 4) < 0.45 AS identifies_anyway,
          r(u, 5) < 0.35 AS identifies_at_start
        FROM range({n_users}) t(u)""",
        # Interests: categories a user browses, weighted sampling without replacement.
        f"""CREATE OR REPLACE TABLE interests AS
        WITH cand AS (
          SELECT u.u, c.ci, u.arrival, u.n_int, u.promo, u.u * 8 + c.ci AS ik,
            ex(u.u * 8 + c.ci, 6) / c.weight AS k
          FROM users u CROSS JOIN cat c),
        ranked AS (
          SELECT *, row_number() OVER (PARTITION BY u ORDER BY k, ci) AS rn FROM cand),
        timed AS (
          SELECT u, ci, ik, promo, rn,
            CASE WHEN rn = 1 THEN arrival + 1000 + floor(r(ik, 7) * 10 * {mi})
                 ELSE arrival + floor(ex(ik, 8) * 10 * {dy}) END::BIGINT AS e
          FROM ranked WHERE rn <= n_int),
        strat AS (
          SELECT t.*, (t.e >= {tp})::INT AS period,
            CASE WHEN t.ci = {hs} AND t.e >= {tp} AND t.promo THEN {_HS_PROMO_CONVERSION}
                 ELSE c.conv END AS p,
            row_number() OVER (PARTITION BY t.ci, t.e >= {tp}, t.promo
                               ORDER BY r(t.ik, 9), t.ik) AS rn2
          FROM timed t JOIN cat c USING (ci)
          WHERE t.e < {t1} - 30 * {mi})
        SELECT u, ci, ik, promo, e, period,
          floor(rn2 * p + 1e-9) > floor((rn2 - 1) * p + 1e-9) AS converted
        FROM strat""",
        # Returns: pre-promo Home Supplies non-converters who come back after PROMO_START.
        f"""CREATE OR REPLACE TABLE returns AS
        SELECT u, ci, ik, promo, rt FROM (
          SELECT *, greatest({tp}, e + 7 * {dy} + {hr})
                    + floor(ex(ik, 15) * 5 * {dy})::BIGINT AS rt
          FROM interests
          WHERE ci = {hs} AND e < {tp} AND NOT converted AND r(ik, 14) < {_RETURN_RATE})
        WHERE rt < {t1} - {hr}""",
        # Purchases (one order each): kind 0 conversion, 1 late, 2 repeat, 3 after a return.
        f"""CREATE OR REPLACE TABLE purchases AS
        WITH conv AS (
          SELECT *, CASE WHEN e + d > {t1} - 2 * {mi}
                         THEN 5 * {mi} + floor(r(ik, 12) * ({t1} - 7 * {mi} - e))::BIGINT
                         ELSE d END AS dd
          FROM (SELECT *, CASE WHEN r(ik, 10) < 0.45
                                THEN 15 * {mi} + floor(r(ik, 11) * 45 * {mi})
                                ELSE {hr} + floor(r(ik, 11) * (6.5 * {dy} - {hr})) END::BIGINT AS d
                FROM interests WHERE converted)),
        allp AS (
          SELECT ik * 4 AS pk, u, ci, e + dd AS ts, 0 AS kind FROM conv
          UNION ALL
          SELECT ik * 4 + 1, u, ci, e + 8 * {dy} + floor(ex(ik, 17) * 10 * {dy})::BIGINT, 1
          FROM interests WHERE NOT converted AND r(ik, 16) < {_LATE_PURCHASE}
          UNION ALL
          SELECT ik * 4 + 2, u, ci, e + dd + 10 * {dy} + floor(ex(ik, 19) * 15 * {dy})::BIGINT, 2
          FROM conv WHERE r(ik, 18) < {_REPEAT_PURCHASE}
          UNION ALL
          SELECT ik * 4 + 3, u, ci, rt + 10 * {mi} + floor(r(ik, 21) * 2 * {dy})::BIGINT, 3
          FROM returns
          WHERE r(ik, 20) < CASE WHEN promo THEN {_RETURN_BUY_PROMO}
                                 ELSE {_RETURN_BUY_CONTROL} END)
        SELECT * FROM allp WHERE ts < {t1} - {mi}""",
        # Order lines: the primary product, sometimes a second one of the same category, an
        # impulse product of a category the user never browsed, or an uncategorized extra.
        f"""CREATE OR REPLACE TABLE lines AS
        WITH cand AS (
          SELECT pk, u, ci, ts, 0 AS slot, ci AS lci FROM purchases
          UNION ALL
          SELECT p.pk, p.u, p.ci, p.ts, 1, p.ci FROM purchases p JOIN users USING (u)
          WHERE r(p.pk, 30) < CASE WHEN users.promo AND p.ci = {hs} AND p.ts >= {tp}
                                   THEN {_PROMO_BUNDLE} ELSE 0.25 END
          UNION ALL
          SELECT pk, u, ci, ts, 2, ((ci + 1 + floor(r(pk, 32) * {ncat - 1})) % {ncat})::BIGINT
          FROM purchases WHERE r(pk, 31) < 0.08
          UNION ALL
          SELECT pk, u, ci, ts, 3, {ncat} FROM purchases WHERE r(pk, 33) < 0.02),
        kept AS (
          SELECT c.* FROM cand c
          WHERE c.slot <> 2 OR NOT EXISTS (
            SELECT 1 FROM interests i WHERE i.u = c.u AND i.ci = c.lci)),
        numbered AS (
          SELECT *, pk * 4 + slot AS lk,
            row_number() OVER (PARTITION BY pk ORDER BY slot) - 1 AS line_no,
            row_number() OVER (PARTITION BY lci ORDER BY r(pk * 4 + slot, 34), pk, slot) AS prn
          FROM kept)
        SELECT pk, u, lk, line_no, lci,
          CASE WHEN lci = {ncat} THEN floor(r(lk, 35) * {len(_UNCATEGORIZED)})::BIGINT
               ELSE (prn - 1) % {npc} END AS pj,
          CASE WHEN r(lk, 36) < 0.80 THEN 1 WHEN r(lk, 36) < 0.95 THEN 2 ELSE 3 END AS qty
        FROM numbered""",
        # Identity: buyers always identify (before their first order); some browsers too.
        f"""CREATE OR REPLACE TABLE idents AS
        WITH fp AS (SELECT u, min(ts) AS first_buy FROM purchases GROUP BY u)
        SELECT u.u, id_ts,
          CASE WHEN r(u.u, 26) < 0.10 AND id_ts + floor(ex(u.u, 27) * 20 * {dy}) < {t1}
               THEN id_ts + floor(ex(u.u, 27) * 20 * {dy})::BIGINT END AS id2_ts,
          r(u.u, 28) < 0.15 AS two_devices
        FROM (
          SELECT u.*, CASE
            WHEN identifies_at_start THEN arrival
            WHEN first_buy IS NOT NULL
              THEN arrival + floor(r(u, 25) * (first_buy - {mi} - arrival))::BIGINT
            ELSE arrival + floor(r(u, 25)
                                 * least(ex(u, 24) * 5 * {dy}, {t1} - {mi} - arrival))::BIGINT
            END AS id_ts
          FROM users u LEFT JOIN fp USING (u)
          WHERE first_buy IS NOT NULL OR identifies_anyway) u""",
        # Core messages. fam: 0 first view, 1 later view, 2 view before buying, 3 add to cart,
        # 4 order, 5 repeated order_id, 6 view on return, 7 abandoned cart, 8 identify,
        # 9 second identify, 10 uncategorized view; 11 exposure, 12 page, added later.
        f"""CREATE OR REPLACE TABLE core0 AS
        SELECT e AS ts, ik * 16 AS eid, u, 0 AS fam, ci, floor(r(ik, 40) * {npc})::BIGINT AS pj,
               NULL::BIGINT AS pk
        FROM interests
        UNION ALL
        SELECT ts, vk * 16 + 1, u, 1, ci, floor(r(vk, 42) * {npc})::BIGINT, NULL
        FROM (SELECT u, ci, vk, e + CASE WHEN r(vk, 41) < 0.6
                                         THEN 30000 + floor(r(vk, 43) * 30 * {mi})
                                         ELSE {hr} + floor(r(vk, 43) * 14 * {dy}) END::BIGINT AS ts
              FROM (SELECT i.*, ik * 16 + j AS vk FROM interests i, range(1, 7) t(j)
                    WHERE j <= floor(ex(ik, 44) * 1.1)))
        WHERE ts < {t1}
        UNION ALL
        SELECT p.ts - 3 * {mi}, p.pk * 16 + 2, p.u, 2, l.lci, l.pj, NULL
        FROM purchases p JOIN lines l ON l.pk = p.pk AND l.line_no = 0
        UNION ALL
        SELECT p.ts - 2 * {mi}, p.pk * 16 + 3, p.u, 3, l.lci, l.pj, NULL
        FROM purchases p JOIN lines l ON l.pk = p.pk AND l.line_no = 0
        UNION ALL
        SELECT ts, pk * 16 + 4, u, 4, NULL, NULL, pk FROM purchases
        UNION ALL
        SELECT ts + {mi} + floor(r(pk, 45) * 30 * {mi})::BIGINT, pk * 16 + 5, u, 5, NULL, NULL, pk
        FROM purchases WHERE r(pk, 46) < 0.012 AND ts + 31 * {mi} < {t1}
        UNION ALL
        SELECT rt + (j - 1) * 3 * {mi}, ((ik * 16 + j) * 16) + 6, u, 6, ci,
               floor(r(ik * 16 + j, 47) * {npc})::BIGINT, NULL
        FROM returns, range(1, 3) t(j) WHERE j = 1 OR r(ik, 48) < 0.5
        UNION ALL
        SELECT e + {mi} + floor(r(ik, 50) * 9 * {mi})::BIGINT, ik * 16 + 7, u, 7, ci,
               floor(r(ik, 40) * {npc})::BIGINT, NULL
        FROM interests WHERE NOT converted AND r(ik, 49) < 0.2
        UNION ALL
        SELECT id_ts, u * 16 + 8, u, 8, NULL, NULL, NULL FROM idents
        UNION ALL
        SELECT id2_ts, u * 16 + 9, u, 9, NULL, NULL, NULL FROM idents WHERE id2_ts IS NOT NULL
        UNION ALL
        SELECT e + 20000, ik * 16 + 10, u, 10, {ncat},
               floor(r(ik, 52) * {len(_UNCATEGORIZED)})::BIGINT, NULL
        FROM interests WHERE r(ik, 51) < 0.01""",
        # Exposure: at the first activity on or after PROMO_START; a few see both variants.
        f"""CREATE OR REPLACE TABLE core AS
        WITH x AS (
          SELECT u, min(ts) + 2000 AS xt FROM core0
          WHERE ts >= {tp} AND fam NOT IN (8, 9) GROUP BY u)
        SELECT ts, eid, u, fam, ci, pj, pk, NULL::BOOLEAN AS promo FROM core0
        UNION ALL
        SELECT xt, u * 16 + 11, u, 11, NULL, NULL, NULL, users.promo
        FROM x JOIN users USING (u) WHERE xt < {t1}
        UNION ALL
        SELECT xt + {hr} + floor(r(u, 53) * 3 * {dy})::BIGINT, u * 16 + 12, u, 11,
               NULL, NULL, NULL, NOT users.promo
        FROM x JOIN users USING (u)
        WHERE r(u, 54) < {_BOTH_VARIANTS} AND xt + {hr} + floor(r(u, 53) * 3 * {dy}) < {t1}""",
    ]


def _lookup_sql() -> dict[str, str]:
    """Constant SQL lists indexed by product / page / name numbers (1-based in SQL)."""
    prods = _product_rows()
    heads = [_product_json(pid, sku, name, cat) for _, _, pid, sku, name, cat, _ in prods]
    prices = [_money(p) for *_, p in prods]
    page_names = ["Category"] * len(_CATALOG) + [n for n, _ in _OTHER_PAGES]
    page_props = [
        f'{{"path":"/c/{slug}","title":{_json_str(c.name)}}}' for slug, c in zip(
            _SLUGS, _CATALOG, strict=True)
    ] + [f'{{"path":"{path}","title":"{name}"}}' for name, path in _OTHER_PAGES]
    return {
        "heads": _sql_list(heads),
        "prices": _sql_list(prices),
        "page_names": _sql_list(page_names),
        "page_props": _sql_list(page_props),
        "first": _sql_list(list(_FIRST_NAMES)),
        "last": _sql_list(list(_LAST_NAMES)),
    }


def _anchors_sql() -> str:
    """Messages that pages are hung before (an hour into the data if there are none)."""
    return f"""CREATE OR REPLACE TABLE anchors AS
        SELECT ts, u, ci, row_number() OVER (ORDER BY r(eid, 60), eid) - 1 AS arn
        FROM core WHERE fam NOT IN (8, 9)
        UNION ALL
        SELECT {_epoch_ms(START_DATE) + _MS_HOUR}, 0, NULL, 0
        WHERE NOT EXISTS (SELECT 1 FROM core WHERE fam NOT IN (8, 9))"""


def _fill_sql(n_pages: int, n_anchors: int, n_dups: int) -> list[str]:
    """Pages hung before random anchor messages, duplicates, order payloads, sorted ``final``."""
    t0 = _epoch_ms(START_DATE)
    ncat = len(_CATALOG)
    return [
        f"""CREATE OR REPLACE TABLE ev AS
        SELECT * FROM core
        UNION ALL
        SELECT greatest({t0}, a.ts - (i // {n_anchors} + 1) * 20000
                              - floor(r(i, 61) * 15000))::BIGINT,
               i * 16 + 13, a.u, 12,
               CASE WHEN a.ci < {ncat} AND r(i, 62) < 0.6 THEN a.ci
                    ELSE {ncat} + floor(r(i, 63) * {len(_OTHER_PAGES)}) END::BIGINT,
               NULL, NULL, NULL
        FROM range({n_pages}) t(i) JOIN anchors a ON a.arn = i % {n_anchors}""",
        f"""CREATE OR REPLACE TABLE orders AS
        WITH lj AS (
          SELECT l.pk, l.line_no, p.cents * l.qty AS cents,
            concat('{{', p.head, ',"price":',
                   CASE WHEN r(l.lk, 81) < 0.01 THEN concat('"', p.price, '"') ELSE p.price END,
                   CASE WHEN l.qty = 1 AND r(l.lk, 82) < 0.15 THEN ''
                        WHEN r(l.lk, 83) < 0.01 THEN concat(',"quantity":"', l.qty, '"')
                        ELSE concat(',"quantity":', l.qty) END, '}}') AS j
          FROM lines l JOIN prod p ON p.ci = l.lci AND p.pj = l.pj),
        agg AS (
          SELECT pk, sum(cents) AS cents, string_agg(j, ',' ORDER BY line_no) AS products
          FROM lj GROUP BY pk),
        money AS (
          SELECT *, concat(cents // 100, '.', lpad((cents % 100)::VARCHAR, 2, '0')) AS amount
          FROM agg)
        SELECT pk, concat(
          '{{"order_id":"ord-', lpad(pk::VARCHAR, 10, '0'), '"',
          CASE WHEN r(pk, 84) < 0.88 THEN concat(',"revenue":', CASE WHEN r(pk, 85) < 0.03
                                                   THEN concat('"', amount, '"') ELSE amount END)
               WHEN r(pk, 84) < 0.94 THEN concat(',"total":', amount) END,
          ',"currency":"{CURRENCY}","products":[', products, ']}}') AS props
        FROM money""",
        f"""CREATE OR REPLACE TABLE final AS
        WITH d AS (
          SELECT * FROM ev ORDER BY r(eid, 64), eid LIMIT {n_dups}),
        allr AS (
          SELECT *, 0 AS dup FROM ev UNION ALL SELECT *, 1 AS dup FROM d)
        SELECT a.ts, a.eid, a.u, a.fam, a.ci, a.pj, a.promo, a.dup, o.props, i.id_ts,
               i.two_devices
        FROM allr a LEFT JOIN orders o ON o.pk = a.pk LEFT JOIN idents i ON i.u = a.u
        ORDER BY a.ts, a.eid, a.dup""",
    ]


def _json_sql() -> str:
    """One JSON text per row of ``final``, in table order.

    Built with ``concat`` (one allocation, NULL arguments skipped) rather than ``||``. Long
    ``IN (...)`` lists are avoided: DuckDB plans them as a mark join, which loses the table order
    that the batch COPY otherwise keeps.
    """
    lk = _lookup_sql()
    npc = _PRODUCTS_PER_CATEGORY
    offsets = [("+02:00", 120), ("-05:00", -300), ("+05:30", 330), ("+09:00", 540)]
    off_names = _sql_list([o for o, _ in offsets])
    off_mins = "[" + ", ".join(str(m) for _, m in offsets) + "]"
    web = '{"library":{"name":"analytics.js","version":"5.2.1"}}'
    ios = '{"library":{"name":"analytics-ios","version":"4.1.8"}}'
    pidx = f"(ci * {npc} + pj + 1)::INT"
    first = f"{lk['first']}[(h(u, 90) % {len(_FIRST_NAMES)} + 1)::INT]"
    last = f"{lk['last']}[(h(u, 91) % {len(_LAST_NAMES)} + 1)::INT]"

    def fam_in(*fams: int) -> str:  # a bit mask, not IN (...): see above
        return f"(({sum(1 << f for f in fams)} >> fam) & 1 = 1)"

    def stamp(ms: str) -> str:
        return f"strftime(make_timestamp(({ms}) * 1000), '%Y-%m-%dT%H:%M:%S.%g')"

    def phone(k: int) -> str:
        return (f"'+1-555-01', lpad((h(u, {k}) % 100)::VARCHAR, 2, '0'), '-', "
                f"lpad((h(u, {k}) // 100 % 10000)::VARCHAR, 4, '0')")

    variant = f"CASE WHEN promo THEN '{TREATMENT_VARIANT}' ELSE '{CONTROL_VARIANT}' END"
    return f"""
    WITH f AS (
      SELECT *,
        {fam_in(8, 9)} OR (id_ts IS NOT NULL AND ts >= id_ts) AS has_uid,
        ts + 30 + floor(r(eid, 74) * 1500)::BIGINT
          + CASE WHEN r(eid, 76) < 0.02 THEN {_MS_MIN} + floor(r(eid, 77) * 6 * {_MS_HOUR})
                 ELSE 0 END::BIGINT AS recv0,
        1000 + floor(r(eid, 75) * 6 * {_MS_HOUR})::BIGINT AS redelivery,
        r(eid, 73) AS tmode,
        (h(eid, 78) % 4 + 1)::INT AS oi
      FROM final)
    SELECT concat(
      '{{"type":"',
      CASE WHEN {fam_in(8, 9)} THEN 'identify' WHEN fam = 12 THEN 'page' ELSE 'track' END, '"',
      CASE WHEN {fam_in(0, 1, 2, 6, 10)} THEN ',"event":"Product Viewed"'
           WHEN {fam_in(3, 7)} THEN ',"event":"Product Added"'
           WHEN {fam_in(4, 5)} THEN ',"event":"Order Completed"'
           WHEN fam = 11 THEN ',"event":"Experiment Viewed"'
           WHEN fam = 12 THEN concat(',"name":"', {lk['page_names']}[(ci + 1)::INT], '"') END,
      ',"messageId":"', lpad(lower(to_hex(hash(xor(eid::UBIGINT, h(0, 1))))), 16, '0'), '"',
      CASE WHEN has_uid THEN concat(',"userId":"user_', lpad((u + 1)::VARCHAR, 7, '0'), '"')
           WHEN r(eid, 72) < 0.2 THEN ',"userId":null' END,
      ',"anonymousId":"', lpad(lower(to_hex(hash(xor(h(0, 3), (
           CASE WHEN two_devices AND has_uid AND NOT {fam_in(8, 9)} AND r(eid, 71) < 0.4
                THEN u + 1099511627776 ELSE u END)::UBIGINT)))), 16, '0'), '"',
      CASE WHEN tmode < 0.003 THEN concat(',"originalTimestamp":"', {stamp('ts')}, 'Z"')
           WHEN tmode < 0.023 THEN concat(',"timestamp":"',
             {stamp(f'ts + {off_mins}[oi] * {_MS_MIN}')}, {off_names}[oi], '"')
           ELSE concat(',"timestamp":"', {stamp('ts')}, 'Z"') END,
      ',"sentAt":"', {stamp('ts + (recv0 - ts) * 4 // 5')}, 'Z","receivedAt":"',
      {stamp('recv0 + CASE WHEN dup = 1 THEN redelivery ELSE 0 END')}, 'Z"',
      CASE
        WHEN {fam_in(0, 1, 2, 6, 10, 3, 7)} THEN concat(
          ',"properties":{{', {lk['heads']}[{pidx}], ',"price":',
          CASE WHEN r(eid, 79) < 0.01 THEN concat('"', {lk['prices']}[{pidx}], '"')
               ELSE {lk['prices']}[{pidx}] END,
          CASE WHEN {fam_in(3, 7)} THEN ',"quantity":1' END, ',"currency":"{CURRENCY}"}}')
        WHEN {fam_in(4, 5)} THEN concat(',"properties":', props)
        WHEN fam = 11 THEN concat(
          ',"properties":{{"experiment_id":"{EXPERIMENT}","experiment_name":"{EXPERIMENT_NAME}"',
          ',"variation_id":"', {variant}, '","variation_name":"', {variant}, '"}}')
        WHEN fam = 12 THEN concat(',"properties":', {lk['page_props']}[(ci + 1)::INT])
        WHEN fam = 8 THEN concat(
          ',"traits":{{"email":"', lower({first}), '.', lower({last}), u + 1,
          '@example.com","phone":"', {phone(92)}, '","name":"', {first}, ' ', {last}, '"}}')
        ELSE concat(',"traits":{{"email":null,"phone":"', {phone(93)}, '"}}')
      END,
      ',"context":', CASE WHEN r(u, 70) < 0.2 THEN '{ios}' ELSE '{web}' END, '}}') AS line
    FROM f"""


def _bad_lines(n: int, seed: int) -> list[str]:
    """Lines that a strict loader must reject: one reason per kind, cycling."""
    rng = random.Random(f"arpu-bad-lines-{seed}")
    t0, t1 = _epoch_ms(START_DATE), _epoch_ms(END_DATE)
    prods = [p for p in _product_rows() if p[5] is not None]
    out: list[str] = []
    for k in range(n):
        ts = datetime.fromtimestamp(rng.randrange(t0, t1) / 1000, tz=timezone.utc)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        recv = ts + timedelta(milliseconds=rng.randrange(30, 1500))
        recv_s = recv.strftime("%Y-%m-%dT%H:%M:%S.") + f"{recv.microsecond // 1000:03d}Z"
        _, _, pid, sku, name, cat, price = rng.choice(prods)
        msg: dict[str, Any] = {
            "type": "track", "event": "Product Viewed", "messageId": f"{rng.getrandbits(64):016x}",
            "anonymousId": f"{rng.getrandbits(64):016x}", "timestamp": stamp, "sentAt": stamp,
            "receivedAt": recv_s,
            "properties": {"product_id": pid, "sku": sku, "category": cat, "name": name,
                           "price": float(_money(price)), "currency": CURRENCY},
            "context": {"library": {"name": "analytics.js", "version": "5.2.1"}},
        }
        kind = k % 5
        if kind == 0:  # truncated JSON (a partial write)
            text = json.dumps(msg, separators=(",", ":"))
            out.append(text[: len(text) * 2 // 3])
            continue
        if kind == 1:  # trailing comma: accepted by lenient parsers, not by RFC 8259
            text = json.dumps(msg, separators=(",", ":"))
            out.append(text[:-1] + ",}")
            continue
        if kind == 2:  # negative price in an order's product
            msg["event"] = "Order Completed"
            msg["properties"] = {
                "order_id": f"ord-bad-{k:06d}", "currency": CURRENCY,
                "products": [{"product_id": pid, "sku": sku, "category": cat, "name": name,
                              "price": -float(_money(price)), "quantity": 1}],
            }
        elif kind == 3:  # neither userId nor anonymousId
            del msg["anonymousId"]
        else:  # a price that is not a number
            msg["properties"]["price"] = "abc"
        out.append(json.dumps(msg, separators=(",", ":")))
    return out


def _gzip_level(size: int) -> int:
    """Small files (the committed sample) are compressed hard, big ones fast."""
    return 9 if size <= 128 << 20 else 6 if size <= 512 << 20 else 1


def _gzip_member(data: bytes, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0: reproducible
    return comp.compress(data) + comp.flush()


def _compress_file(src: Path, dst: Path) -> None:
    """Gzip ``src`` into ``dst`` as members of a fixed size compressed in parallel.

    zlib releases the GIL, so threads use every core; the bytes depend only on the chunk size
    and the level, never on the number of workers.
    """
    level = _gzip_level(src.stat().st_size)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, src.open("rb") as fh, dst.open("wb") as out:
        pending: deque[Future[bytes]] = deque()
        while block := fh.read(_GZIP_CHUNK):
            pending.append(pool.submit(_gzip_member, block, level))
            if len(pending) > workers:
                out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())


def _count(con: DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _build(con: DuckDBPyConnection, events: int, seed: int) -> int:
    """Create table ``final``: exactly ``events`` rows; returns the number of duplicates."""
    n_dups = round(events * _DUPLICATE_RATE)
    base = events - n_dups
    for stmt in _setup_sql(seed):
        con.execute(stmt)
    n_users = max(1, round(base * _USERS_PER_EVENT))
    while True:
        for stmt in _core_sql(n_users):
            con.execute(stmt)
        n_core = _count(con, "SELECT count(*) FROM core")
        if n_core <= base:
            break
        if n_users == 1:  # a handful of events: keep the earliest messages
            con.execute(f"CREATE OR REPLACE TABLE core AS SELECT * FROM core "
                        f"ORDER BY ts, eid LIMIT {base}")
            n_core = base
            break
        n_users = max(1, min(n_users - 1, int(n_users * base / n_core * 0.97)))
    con.execute(_anchors_sql())
    n_anchors = _count(con, "SELECT count(*) FROM anchors")
    for stmt in _fill_sql(base - n_core, n_anchors, n_dups):
        con.execute(stmt)
    return n_dups


def _generate(out: Path, events: int, seed: int, threads: int | None = None) -> SeedStats:
    import duckdb

    if events < 0:
        raise ValueError(f"events must be >= 0, got {events}")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gz = out.name.endswith(".gz")
    plain = out.with_name(out.name + ".tmp") if gz else out
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")  # COPY writes in table order
        con.execute("SET enable_progress_bar = false")
        n_dups = _build(con, events, seed)
        n_events = _count(con, "SELECT count(*) FROM final")
        target = str(plain).replace("'", "''")
        con.execute(
            f"COPY ({_json_sql()}) TO '{target}' "
            "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', COMPRESSION none)"
        )
    finally:
        con.close()
    bad = _bad_lines(0 if events == 0 else max(5, round(events * _BAD_LINES_PER_EVENT)), seed)
    bad_bytes = "".join(line + "\n" for line in bad).encode()
    try:
        if gz:
            _compress_file(plain, out)
            if bad_bytes:  # a second gzip member: gzip readers concatenate members
                with out.open("ab") as fh:
                    fh.write(_gzip_member(bad_bytes, 9))
        elif bad_bytes:
            with out.open("ab") as fh:
                fh.write(bad_bytes)
    finally:
        if gz:
            plain.unlink(missing_ok=True)
    return SeedStats(
        events=n_events,
        lines=n_events + len(bad),
        bad_lines=len(bad),
        duplicates=n_dups,
        bytes=out.stat().st_size,
        seconds=round(time.perf_counter() - started, 3),
    )


def generate(out: Path, events: int = 100_000, seed: int = 42) -> SeedStats:
    """Write ``events`` Segment messages (plus a few bad lines) to ``out`` (gzip if ``.gz``).

    ``events`` counts the valid messages, duplicates included; the bad lines come on top.
    """
    return _generate(out, events, seed)
