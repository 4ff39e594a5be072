-- derived_user_periods: compiled for bigquery from derived_user_periods.sql
/*
description: >
  Per grain, period and user with a track, page or screen message in the period (in range):
  the revenue of their orders in the period and whether they ordered. What arpu_timeseries
  sums per segment; not a SPEC relation.
# delete+insert by user: a user's periods read only that user's messages and orders
materialized: incremental
incremental_strategy: delete+insert
unique_key: [grain, period_start, user_key]
touched_by: user_key
touched_keys: "
select user_key from "int_event_users" where updated_load > 0
union
select previous_user_key as user_key from "int_event_users"
where updated_load > 0 and previous_user_key is not null union
select user_key from "int_orders" where updated_load > 0
union
select previous_user_key as user_key from "int_orders"
where updated_load > 0 and previous_user_key is not null"
tags: [timeseries]
*/
WITH activity AS (
  /* one row per user and active day: weeks and months are unions of days */
  SELECT DISTINCT
    user_key,
    CAST(event_ts AS DATE) AS active_day
  FROM `stg_events`
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
      CAST(TIMESTAMP_TRUNC(active_day, DAY) AS DATE) AS period_start,
      r.*
    FROM activity AS r
    UNION ALL
    SELECT
      'week' AS grain,
      CAST(TIMESTAMP_TRUNC(active_day, ISOWEEK) AS DATE) AS period_start,
      r.*
    FROM activity AS r
    UNION ALL
    SELECT
      'month' AS grain,
      CAST(TIMESTAMP_TRUNC(active_day, MONTH) AS DATE) AS period_start,
      r.*
    FROM activity AS r
  ) AS g
), orders AS (
  SELECT
    user_key,
    ordered_at,
    revenue
  FROM `fct_orders`
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
      CAST(TIMESTAMP_TRUNC(ordered_at, DAY) AS DATE) AS period_start,
      r.*
    FROM orders AS r
    UNION ALL
    SELECT
      'week' AS grain,
      CAST(TIMESTAMP_TRUNC(ordered_at, ISOWEEK) AS DATE) AS period_start,
      r.*
    FROM orders AS r
    UNION ALL
    SELECT
      'month' AS grain,
      CAST(TIMESTAMP_TRUNC(ordered_at, MONTH) AS DATE) AS period_start,
      r.*
    FROM orders AS r
  ) AS g
  GROUP BY
    grain,
    period_start,
    user_key
)
SELECT
  a.grain,
  a.period_start,
  a.user_key,
  COALESCE(o.revenue, 0) AS revenue,
  NOT o.user_key IS NULL AS is_purchaser
FROM active_periods AS a
LEFT JOIN order_periods AS o
  ON a.grain = o.grain AND a.period_start = o.period_start AND a.user_key = o.user_key
