"""The messages' text: one Segment JSON message per row of ``final`` (written by DuckDB, in table
order), and the bad lines a strict loader must reject (a few, in Python)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from runner.seed.catalogue import (
    CATALOG,
    CONTROL_VARIANT,
    CURRENCY,
    END_DATE,
    EXPERIMENT,
    EXPERIMENT_NAME,
    FIRST_NAMES,
    LAST_NAMES,
    MS_HOUR,
    MS_MIN,
    OTHER_PAGES,
    PRODUCTS_PER_CATEGORY,
    SLUGS,
    START_DATE,
    TREATMENT_VARIANT,
    epoch_ms,
    json_str,
    money,
    product_json,
    product_rows,
)
from runner.seed.tables import sql_list


def _lookup_sql() -> dict[str, str]:
    """Constant SQL lists indexed by product / page / name numbers (1-based in SQL)."""
    prods = product_rows()
    heads = [product_json(pid, sku, name, cat) for _, _, pid, sku, name, cat, _ in prods]
    prices = [money(p) for *_, p in prods]
    page_names = ["Category"] * len(CATALOG) + [n for n, _ in OTHER_PAGES]
    page_props = [
        f'{{"path":"/c/{slug}","title":{json_str(c.name)}}}' for slug, c in zip(
            SLUGS, CATALOG, strict=True)
    ] + [f'{{"path":"{path}","title":"{name}"}}' for name, path in OTHER_PAGES]
    return {
        "heads": sql_list(heads),
        "prices": sql_list(prices),
        "page_names": sql_list(page_names),
        "page_props": sql_list(page_props),
        "first": sql_list(list(FIRST_NAMES)),
        "last": sql_list(list(LAST_NAMES)),
    }


def json_sql(rows: str = "final") -> str:
    """One JSON text per row of ``rows`` (``final`` or a slice of it), in table order.

    Built with ``concat`` (one allocation, NULL arguments skipped) rather than ``||``. Long
    ``IN (...)`` lists are avoided: DuckDB plans them as a mark join, which loses the table order
    that the batch COPY otherwise keeps.
    """
    lk = _lookup_sql()
    npc = PRODUCTS_PER_CATEGORY
    offsets = [("+02:00", 120), ("-05:00", -300), ("+05:30", 330), ("+09:00", 540)]
    off_names = sql_list([o for o, _ in offsets])
    off_mins = "[" + ", ".join(str(m) for _, m in offsets) + "]"
    web = '{"library":{"name":"analytics.js","version":"5.2.1"}}'
    ios = '{"library":{"name":"analytics-ios","version":"4.1.8"}}'
    pidx = f"(ci * {npc} + pj + 1)::INT"
    first = f"{lk['first']}[(h(u, 90) % {len(FIRST_NAMES)} + 1)::INT]"
    last = f"{lk['last']}[(h(u, 91) % {len(LAST_NAMES)} + 1)::INT]"

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
          + CASE WHEN r(eid, 76) < 0.02 THEN {MS_MIN} + floor(r(eid, 77) * 6 * {MS_HOUR})
                 ELSE 0 END::BIGINT AS recv0,
        1000 + floor(r(eid, 75) * 6 * {MS_HOUR})::BIGINT AS redelivery,
        r(eid, 73) AS tmode,
        (h(eid, 78) % 4 + 1)::INT AS oi
      FROM {rows})
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
             {stamp(f'ts + {off_mins}[oi] * {MS_MIN}')}, {off_names}[oi], '"')
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


def bad_lines(n: int, seed: int) -> list[str]:
    """Lines that a strict loader must reject: one reason per kind, cycling."""
    rng = random.Random(f"arpu-bad-lines-{seed}")
    t0, t1 = epoch_ms(START_DATE), epoch_ms(END_DATE)
    prods = [p for p in product_rows() if p[5] is not None]
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
                           "price": float(money(price)), "currency": CURRENCY},
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
                              "price": -float(money(price)), "quantity": 1}],
            }
        elif kind == 3:  # neither userId nor anonymousId
            del msg["anonymousId"]
        else:  # a price that is not a number
            msg["properties"]["price"] = "abc"
        out.append(json.dumps(msg, separators=(",", ":")))
    return out
