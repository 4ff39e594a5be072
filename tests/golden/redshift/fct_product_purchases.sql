-- fct_product_purchases: compiled for redshift from fct_product_purchases.sql
/*
description: >
  One row per product line of a completed order (Mixpanel's "Product Purchased" from "Generate
  Purchase Event Per Product"). quantity defaults to 1; a product without a price keeps null price
  and line_revenue. event_id is the order's kept Order Completed message.
# delete+insert by order, not a merge: an order whose earliest copy arrives late with fewer
# products must lose lines, and a merge by (order_id, line_number) cannot delete lines of an
# order that now has fewer (or of an order that is gone)
materialized: incremental
incremental_strategy: delete+insert
unique_key: [order_id, line_number]
touched_by: order_id
touched_keys: "select order_id from "int_orders" where updated_load > 0
union
select order_id from "fct_product_purchases" where event_id in (select event_id from "stg_events" where updated_load > 0)"
tags: [facts]
*/
WITH lines AS (
  SELECT
    l.order_id,
    CAST(l.position AS INTEGER) AS line_number,
    l.user_key,
    l.ordered_at AS purchased_at,
    CASE
      WHEN TRIM((
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      ) FROM JSON_EXTRACT_PATH_TEXT(l.element, 'product_id')) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'product_id')
    END AS product_id,
    CASE
      WHEN TRIM((
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      ) FROM JSON_EXTRACT_PATH_TEXT(l.element, 'sku')) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'sku')
    END AS sku,
    CASE
      WHEN TRIM((
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      ) FROM JSON_EXTRACT_PATH_TEXT(l.element, 'category')) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'category')
    END AS category,
    CASE
      WHEN TRIM((
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      ) FROM JSON_EXTRACT_PATH_TEXT(l.element, 'name')) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'name')
    END AS name,
    TRY_CAST(NULLIF(
      TRIM((
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      ) FROM JSON_EXTRACT_PATH_TEXT(l.element, 'price')),
      ''
    ) AS DOUBLE PRECISION) AS price,
    COALESCE(
      TRY_CAST(NULLIF(
        TRIM((
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        ) FROM JSON_EXTRACT_PATH_TEXT(l.element, 'quantity')),
        ''
      ) AS DOUBLE PRECISION),
      1
    ) AS quantity,
    l.event_id
  FROM (
    SELECT
      src.*,
      JSON_EXTRACT_ARRAY_ELEMENT_TEXT(JSON_EXTRACT_PATH_TEXT(src.properties, 'products'), n.position - 1) AS element,
      n.position
    FROM "int_orders" AS src
    INNER JOIN (
      SELECT
        thousands.d * 1000 + hundreds.d * 100 + tens.d * 10 + ones.d + 1 AS position
      FROM (
        SELECT
          0 AS d
        UNION ALL
        SELECT
          1
        UNION ALL
        SELECT
          2
        UNION ALL
        SELECT
          3
        UNION ALL
        SELECT
          4
        UNION ALL
        SELECT
          5
        UNION ALL
        SELECT
          6
        UNION ALL
        SELECT
          7
        UNION ALL
        SELECT
          8
        UNION ALL
        SELECT
          9
      ) AS thousands
      CROSS JOIN (
        SELECT
          0 AS d
        UNION ALL
        SELECT
          1
        UNION ALL
        SELECT
          2
        UNION ALL
        SELECT
          3
        UNION ALL
        SELECT
          4
        UNION ALL
        SELECT
          5
        UNION ALL
        SELECT
          6
        UNION ALL
        SELECT
          7
        UNION ALL
        SELECT
          8
        UNION ALL
        SELECT
          9
      ) AS hundreds
      CROSS JOIN (
        SELECT
          0 AS d
        UNION ALL
        SELECT
          1
        UNION ALL
        SELECT
          2
        UNION ALL
        SELECT
          3
        UNION ALL
        SELECT
          4
        UNION ALL
        SELECT
          5
        UNION ALL
        SELECT
          6
        UNION ALL
        SELECT
          7
        UNION ALL
        SELECT
          8
        UNION ALL
        SELECT
          9
      ) AS tens
      CROSS JOIN (
        SELECT
          0 AS d
        UNION ALL
        SELECT
          1
        UNION ALL
        SELECT
          2
        UNION ALL
        SELECT
          3
        UNION ALL
        SELECT
          4
        UNION ALL
        SELECT
          5
        UNION ALL
        SELECT
          6
        UNION ALL
        SELECT
          7
        UNION ALL
        SELECT
          8
        UNION ALL
        SELECT
          9
      ) AS ones
    ) AS n
      ON n.position <= JSON_ARRAY_LENGTH(JSON_EXTRACT_PATH_TEXT(src.properties, 'products'))
  ) AS l
)
SELECT
  order_id,
  line_number,
  user_key,
  purchased_at,
  product_id,
  sku,
  category,
  name,
  price,
  quantity,
  price * quantity AS line_revenue,
  event_id
FROM lines
