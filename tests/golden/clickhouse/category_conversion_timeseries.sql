-- category_conversion_timeseries: compiled for clickhouse from category_conversion_timeseries.sql
/*
description: >
  The recipe's main metric #2 over time (Mixpanel's funnel line chart): per grain, period,
  segment and category, the users whose first view of the category within the period converted
  within the window (the purchase may fall after the period).
unique_key: [grain, period_start, segment, category]
tags: [recipe, timeseries]
*/
WITH funnel AS (
  SELECT
    grain,
    period_start,
    category,
    user_key,
    converted_at
  FROM "derived_funnel_periods"
), segmented AS (
  SELECT
    'all' AS segment,
    r.*
  FROM funnel AS r
  UNION ALL
  SELECT
    CASE WHEN s.is_cohort THEN 'cohort' ELSE 'non_cohort' END AS segment,
    r.*
  FROM funnel AS r
  INNER JOIN "derived_user_segments" AS s
    ON r.user_key = s.user_key
), per_segment AS (
  SELECT
    grain,
    period_start,
    segment,
    category,
    COUNT(*) AS viewers,
    COUNT(converted_at) AS purchasers
  FROM segmented
  GROUP BY
    grain,
    period_start,
    segment,
    category
)
SELECT
  grain,
  period_start,
  segment,
  category,
  viewers,
  purchasers,
  (
    CAST(purchasers AS Nullable(Float64)) / nullIf(CAST(viewers AS Nullable(Float64)), 0)
  ) AS conversion_rate
FROM per_segment
