-- fct_orders: compiled for clickhouse from fct_orders.sql
/*
description: >
  One row per completed order. revenue = properties.revenue, else properties.total, else the sum
  of price * quantity over its products (0 when none has a price).
# delete+insert, as int_orders: an order whose message now carries another order has to
# disappear
materialized: incremental
incremental_strategy: delete+insert
unique_key: order_id
touched_keys: "select order_id from "int_orders" where updated_load > 0
union
select order_id from "fct_orders" where event_id in (select event_id from "stg_events" where updated_load > 0)"
tags: [facts]
*/
WITH line_totals AS (
  SELECT
    order_id,
    COUNT(*) AS product_count,
    SUM(line_revenue) AS lines_revenue
  FROM "fct_product_purchases"
  GROUP BY
    order_id
), orders AS (
  SELECT
    o.order_id,
    o.user_key,
    o.ordered_at,
    COALESCE(o.stated_revenue, o.stated_total, l.lines_revenue, 0) AS revenue,
    o.currency,
    COALESCE(l.product_count, 0) AS product_count,
    o.event_id
  FROM "int_orders" AS o
  LEFT JOIN line_totals AS l
    ON o.order_id = l.order_id
)
SELECT
  *
FROM orders
