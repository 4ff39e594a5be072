-- fct_product_purchases: compiled for snowflake from fct_product_purchases.sql
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
    CAST(l.position AS INT) AS line_number,
    l.user_key,
    l.ordered_at AS purchased_at,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(l.element, 'product_id'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'product_id')
    END AS product_id,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(l.element, 'sku'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'sku')
    END AS sku,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(l.element, 'category'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'category')
    END AS category,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(l.element, 'name'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(l.element, 'name')
    END AS name,
    TRY_CAST(NULLIF(
      TRIM(
        JSON_EXTRACT_PATH_TEXT(l.element, 'price'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ),
      ''
    ) AS DOUBLE) AS price,
    COALESCE(
      TRY_CAST(NULLIF(
        TRIM(
          JSON_EXTRACT_PATH_TEXT(l.element, 'quantity'),
          (
            ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
          )
        ),
        ''
      ) AS DOUBLE),
      1
    ) AS quantity,
    l.event_id
  FROM (
    SELECT
      src.*,
      e.element,
      e.position + 1 AS position
    FROM "int_orders" AS src
    CROSS JOIN TABLE(FLATTEN(INPUT => CAST(GET_PATH(PARSE_JSON(src.properties), 'products') AS ARRAY(VARIANT)))) AS e(seq, key, path, position, element, this)
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
