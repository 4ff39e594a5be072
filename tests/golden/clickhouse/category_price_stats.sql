-- category_price_stats: compiled for clickhouse from category_price_stats.sql
/*
description: >
  Price statistics per category over purchased lines in range: lines, orders, units, revenue,
  mean item price (Mixpanel's "average of price"), mean unit price, and rank by lines ordered.
unique_key: category
tags: [recipe]
*/
WITH lines AS (
  SELECT
    *
  FROM "fct_product_purchases"
  WHERE
    NOT (
      category IS NULL
    ) AND TRUE AND TRUE
), per_category AS (
  SELECT
    category,
    COUNT(*) AS purchased_lines,
    COUNT(DISTINCT order_id) AS orders,
    SUM(quantity) AS units,
    COALESCE(SUM(line_revenue), 0) AS revenue,
    AVG(price) AS avg_item_price,
    (
      CAST(SUM(line_revenue) AS Nullable(Float64)) / nullIf(
        CAST(SUM(CASE WHEN NOT (
          price IS NULL
        ) THEN quantity END) AS Nullable(Float64)),
        0
      )
    ) AS avg_unit_price
  FROM lines
  GROUP BY
    category
)
SELECT
  *,
  RANK() OVER (ORDER BY purchased_lines DESC) AS order_rank
FROM per_category
