-- fct_product_purchases: compiled for clickhouse from fct_product_purchases.sql
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
    CAST(l.position AS Nullable(Int32)) AS line_number,
    l.user_key,
    l.ordered_at AS purchased_at,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(l.element, 'product_id')) <> ''
      THEN JSONExtractString(l.element, 'product_id')
    END AS product_id,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(l.element, 'sku')) <> ''
      THEN JSONExtractString(l.element, 'sku')
    END AS sku,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(l.element, 'category')) <> ''
      THEN JSONExtractString(l.element, 'category')
    END AS category,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(l.element, 'name')) <> ''
      THEN JSONExtractString(l.element, 'name')
    END AS name,
    toFloat64OrNull(
      TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(l.element, 'price'))
    ) AS price,
    COALESCE(
      toFloat64OrNull(
        TRIM(BOTH (
          ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
        ) FROM JSONExtractString(l.element, 'quantity'))
      ),
      1
    ) AS quantity,
    l.event_id
  FROM (
    SELECT
      src.*,
      arrayJoin(arrayEnumerate(JSONExtractArrayRaw(COALESCE(src.properties, ''), 'products'))) AS position,
      arrayElement(JSONExtractArrayRaw(COALESCE(src.properties, ''), 'products'), position) AS element
    FROM "int_orders" AS src
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
