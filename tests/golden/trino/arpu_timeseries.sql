-- arpu_timeseries: compiled for trino from arpu_timeseries.sql
/*
description: >
  The recipe's main metric #1 over time: per grain (day, ISO week, month), period and segment
  (all, cohort of the target category, non_cohort): revenue of orders in the period, active users
  (a track, page or screen message in the period), purchasers, ARPU and ARPPU.
unique_key: [grain, period_start, segment]
tags: [recipe, timeseries]
*/
WITH activity AS (
  /* one row per user and active day: weeks and months are unions of days */
  SELECT DISTINCT
    user_key,
    CAST(event_ts AS DATE) AS active_day
  FROM "stg_events"
  WHERE
    message_type IN ('track', 'page', 'screen') AND TRUE AND TRUE
), active_periods AS (
  SELECT DISTINCT
    grain,
    period_start,
    user_key
  FROM (
    SELECT
      'day' AS grain,
      CAST(DATE_TRUNC('DAY', active_day) AS DATE) AS period_start,
      r.*
    FROM activity AS r
    UNION ALL
    SELECT
      'week' AS grain,
      CAST(DATE_TRUNC('WEEK', active_day) AS DATE) AS period_start,
      r.*
    FROM activity AS r
    UNION ALL
    SELECT
      'month' AS grain,
      CAST(DATE_TRUNC('MONTH', active_day) AS DATE) AS period_start,
      r.*
    FROM activity AS r
  ) AS g
), orders AS (
  SELECT
    user_key,
    ordered_at,
    revenue
  FROM "fct_orders"
  WHERE
    TRUE AND TRUE
), order_periods AS (
  SELECT
    grain,
    period_start,
    user_key,
    SUM(revenue) AS revenue
  FROM (
    SELECT
      'day' AS grain,
      CAST(DATE_TRUNC('DAY', ordered_at) AS DATE) AS period_start,
      r.*
    FROM orders AS r
    UNION ALL
    SELECT
      'week' AS grain,
      CAST(DATE_TRUNC('WEEK', ordered_at) AS DATE) AS period_start,
      r.*
    FROM orders AS r
    UNION ALL
    SELECT
      'month' AS grain,
      CAST(DATE_TRUNC('MONTH', ordered_at) AS DATE) AS period_start,
      r.*
    FROM orders AS r
  ) AS g
  GROUP BY
    grain,
    period_start,
    user_key
), per_user AS (
  SELECT
    a.grain,
    a.period_start,
    a.user_key,
    COALESCE(o.revenue, 0) AS revenue,
    NOT o.user_key IS NULL AS is_purchaser
  FROM active_periods AS a
  LEFT JOIN order_periods AS o
    ON a.grain = o.grain AND a.period_start = o.period_start AND a.user_key = o.user_key
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
  INNER JOIN "derived_user_segments" AS s
    ON r.user_key = s.user_key
), per_segment AS (
  SELECT
    grain,
    period_start,
    segment,
    SUM(revenue) AS revenue,
    COUNT(*) AS active_users,
    CAST(SUM(CASE WHEN is_purchaser THEN 1 ELSE 0 END) AS BIGINT) AS purchasers /* a count is a bigint (DuckDB sums integers into a 128-bit HUGEINT) */
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
    CAST(revenue AS DOUBLE) / NULLIF(CAST(active_users AS DOUBLE), 0)
  ) AS arpu,
  (
    CAST(revenue AS DOUBLE) / NULLIF(CAST(purchasers AS DOUBLE), 0)
  ) AS arppu
FROM per_segment
