"""The sample's behaviour as DuckDB tables, from hash-based pseudo-randomness: users arrive,
browse categories (interests), buy (purchases and their lines), identify, come back after the
promotion and see the experiment (core); pages and duplicates fill the count asked for, and
``final`` holds one row per message, in time order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.seed.catalogue import (
    BOTH_VARIANTS,
    CATALOG,
    CATEGORIES,
    CURRENCY,
    DUPLICATE_RATE,
    END_DATE,
    HS_PROMO_CONVERSION,
    LATE_PURCHASE,
    MS_DAY,
    MS_HOUR,
    MS_MIN,
    OTHER_PAGES,
    PRODUCTS_PER_CATEGORY,
    PROMO_BUNDLE,
    PROMO_START,
    REPEAT_PURCHASE,
    RETURN_BUY_CONTROL,
    RETURN_BUY_PROMO,
    RETURN_RATE,
    START_DATE,
    TARGET_CATEGORY,
    UNCATEGORIZED,
    epoch_ms,
    money,
    product_json,
    product_rows,
)

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

_USERS_PER_EVENT = 0.085  # first guess of users per requested event; pages fill the rest


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(items: list[str]) -> str:
    return "[" + ", ".join(sql_str(s) for s in items) + "]"


def _setup_sql(seed: int) -> list[str]:
    prods = ", ".join(
        f"({ci}, {pj}, {sql_str(product_json(pid, sku, name, cat))}, '{money(cents)}', {cents})"
        for ci, pj, pid, sku, name, cat, cents in product_rows()
    )
    cats = ", ".join(
        f"({ci}, {sql_str(c.name)}, {c.weight}, {c.conversion})" for ci, c in enumerate(CATALOG)
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
    t0, t1, tp = epoch_ms(START_DATE), epoch_ms(END_DATE), epoch_ms(PROMO_START)
    mi, hr, dy = MS_MIN, MS_HOUR, MS_DAY
    hs = CATEGORIES.index(TARGET_CATEGORY)
    npc = PRODUCTS_PER_CATEGORY
    ncat = len(CATALOG)
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
            CASE WHEN t.ci = {hs} AND t.e >= {tp} AND t.promo THEN {HS_PROMO_CONVERSION}
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
          WHERE ci = {hs} AND e < {tp} AND NOT converted AND r(ik, 14) < {RETURN_RATE})
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
          FROM interests WHERE NOT converted AND r(ik, 16) < {LATE_PURCHASE}
          UNION ALL
          SELECT ik * 4 + 2, u, ci, e + dd + 10 * {dy} + floor(ex(ik, 19) * 15 * {dy})::BIGINT, 2
          FROM conv WHERE r(ik, 18) < {REPEAT_PURCHASE}
          UNION ALL
          SELECT ik * 4 + 3, u, ci, rt + 10 * {mi} + floor(r(ik, 21) * 2 * {dy})::BIGINT, 3
          FROM returns
          WHERE r(ik, 20) < CASE WHEN promo THEN {RETURN_BUY_PROMO}
                                 ELSE {RETURN_BUY_CONTROL} END)
        SELECT * FROM allp WHERE ts < {t1} - {mi}""",
        # Order lines: the primary product, sometimes a second one of the same category, an
        # impulse product of a category the user never browsed, or an uncategorized extra.
        f"""CREATE OR REPLACE TABLE lines AS
        WITH cand AS (
          SELECT pk, u, ci, ts, 0 AS slot, ci AS lci FROM purchases
          UNION ALL
          SELECT p.pk, p.u, p.ci, p.ts, 1, p.ci FROM purchases p JOIN users USING (u)
          WHERE r(p.pk, 30) < CASE WHEN users.promo AND p.ci = {hs} AND p.ts >= {tp}
                                   THEN {PROMO_BUNDLE} ELSE 0.25 END
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
          CASE WHEN lci = {ncat} THEN floor(r(lk, 35) * {len(UNCATEGORIZED)})::BIGINT
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
               floor(r(ik, 52) * {len(UNCATEGORIZED)})::BIGINT, NULL
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
        WHERE r(u, 54) < {BOTH_VARIANTS} AND xt + {hr} + floor(r(u, 53) * 3 * {dy}) < {t1}""",
    ]


def _anchors_sql() -> str:
    """Messages that pages are hung before (an hour into the data if there are none)."""
    return f"""CREATE OR REPLACE TABLE anchors AS
        SELECT ts, u, ci, row_number() OVER (ORDER BY r(eid, 60), eid) - 1 AS arn
        FROM core WHERE fam NOT IN (8, 9)
        UNION ALL
        SELECT {epoch_ms(START_DATE) + MS_HOUR}, 0, NULL, 0
        WHERE NOT EXISTS (SELECT 1 FROM core WHERE fam NOT IN (8, 9))"""


def _fill_sql(n_pages: int, n_anchors: int, n_dups: int) -> list[str]:
    """Pages hung before random anchor messages, duplicates, order payloads, sorted ``final``."""
    t0 = epoch_ms(START_DATE)
    ncat = len(CATALOG)
    return [
        f"""CREATE OR REPLACE TABLE ev AS
        SELECT * FROM core
        UNION ALL
        SELECT greatest({t0}, a.ts - (i // {n_anchors} + 1) * 20000
                              - floor(r(i, 61) * 15000))::BIGINT,
               i * 16 + 13, a.u, 12,
               CASE WHEN a.ci < {ncat} AND r(i, 62) < 0.6 THEN a.ci
                    ELSE {ncat} + floor(r(i, 63) * {len(OTHER_PAGES)}) END::BIGINT,
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


def count(con: DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def build(con: DuckDBPyConnection, events: int, seed: int) -> int:
    """Create table ``final``: exactly ``events`` rows; returns the number of duplicates."""
    n_dups = round(events * DUPLICATE_RATE)
    base = events - n_dups
    for stmt in _setup_sql(seed):
        con.execute(stmt)
    n_users = max(1, round(base * _USERS_PER_EVENT))
    while True:
        for stmt in _core_sql(n_users):
            con.execute(stmt)
        n_core = count(con, "SELECT count(*) FROM core")
        if n_core <= base:
            break
        if n_users == 1:  # a handful of events: keep the earliest messages
            con.execute(f"CREATE OR REPLACE TABLE core AS SELECT * FROM core "
                        f"ORDER BY ts, eid LIMIT {base}")
            n_core = base
            break
        n_users = max(1, min(n_users - 1, int(n_users * base / n_core * 0.97)))
    _drop(con, "core0", "users", "interests", "returns", "purchases")
    con.execute(_anchors_sql())
    n_anchors = count(con, "SELECT count(*) FROM anchors")
    ev, orders, final = _fill_sql(base - n_core, n_anchors, n_dups)
    con.execute(ev)
    _drop(con, "core", "anchors")
    con.execute(orders)
    _drop(con, "lines")
    con.execute(final)
    _drop(con, "ev", "orders", "idents")
    return n_dups


def _drop(con: DuckDBPyConnection, *tables: str) -> None:
    """Tables nothing further reads: their memory goes to the next ones (at 100M events the
    tables of the behaviour outgrow the machine's memory and spill to disk)."""
    for table in tables:
        con.execute(f"DROP TABLE {table}")
