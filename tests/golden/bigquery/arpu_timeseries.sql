-- arpu_timeseries: compiled for bigquery from arpu_timeseries.sql
/*
description: >
  The recipe's main metric #1 over time: per grain (day, ISO week, month), period and segment
  (all, cohort of the target category, non_cohort): revenue of orders in the period, active users
  (a track, page or screen message in the period), purchasers, ARPU and ARPPU.
unique_key: [grain, period_start, segment]
tags: [recipe, timeseries]
*/
WITH per_user AS (
  SELECT
    grain,
    period_start,
    user_key,
    revenue,
    is_purchaser
  FROM `derived_user_periods`
), segmented AS (
  SELECT
    'all' AS segment,
    r.*
  FROM per_user AS r
  UNION ALL
  SELECT
    CASE WHEN s.is_cohort THEN 'cohort' ELSE 'non_cohort' END AS segment,
    r.*
  FROM per_user AS r
  INNER JOIN `derived_user_segments` AS s
    ON r.user_key = s.user_key
), per_segment AS (
  SELECT
    grain,
    period_start,
    segment,
    SUM(revenue) AS revenue,
    COUNT(*) AS active_users,
    CAST(SUM(CASE WHEN is_purchaser THEN 1 ELSE 0 END) AS INT64) AS purchasers /* a count is a bigint (DuckDB sums integers into a 128-bit HUGEINT) */
  FROM segmented
  GROUP BY
    grain,
    period_start,
    segment
)
SELECT
  grain,
  period_start,
  segment,
  revenue,
  active_users,
  purchasers,
  (
    CAST(revenue AS FLOAT64) / NULLIF(CAST(active_users AS FLOAT64), 0)
  ) AS arpu,
  (
    CAST(revenue AS FLOAT64) / NULLIF(CAST(purchasers AS FLOAT64), 0)
  ) AS arppu
FROM per_segment
