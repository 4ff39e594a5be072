-- category_opportunities: compiled for clickhouse from category_opportunities.sql
/*
description: >
  The recipe's step 2: categories with low conversion (below the median over categories) and a
  high average item price (at or above the median), ranked by revenue at stake =
  (viewers - purchasers) * avg_item_price. Rank 1 is the recommended promotion target unless
  var target_category names one (is_target marks the category the cohort relations use).
unique_key: category
tags: [recipe]
*/
WITH joined AS (
  SELECT
    f.category,
    f.conversion_rate,
    p.avg_item_price,
    f.viewers,
    f.purchasers,
    f.viewers - f.purchasers AS non_converted,
    (
      f.viewers - f.purchasers
    ) * p.avg_item_price AS revenue_at_stake,
    p.order_rank
  FROM "category_funnel" AS f
  LEFT JOIN "category_price_stats" AS p
    ON f.category = p.category
), medians AS (
  SELECT
    quantileExactInclusive(conversion_rate) AS median_conversion_rate,
    quantileExactInclusive(avg_item_price) AS median_avg_item_price
  FROM joined
), flagged AS (
  SELECT
    j.*,
    j.conversion_rate < m.median_conversion_rate AS low_conversion,
    j.avg_item_price >= m.median_avg_item_price AS high_price,
    RANK() OVER (ORDER BY j.revenue_at_stake DESC) AS rank,
    ROW_NUMBER() OVER (ORDER BY j.revenue_at_stake DESC, j.category) AS tiebreak
  FROM joined AS j
  CROSS JOIN medians AS m
)
SELECT
  category,
  conversion_rate,
  avg_item_price,
  viewers,
  purchasers,
  non_converted,
  revenue_at_stake,
  low_conversion,
  high_price,
  rank,
  order_rank,
  tiebreak = 1 AS is_target
FROM flagged
