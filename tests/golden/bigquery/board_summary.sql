-- board_summary: compiled for bigquery from board_summary.sql
/*
description: >
  What `arpu dashboard` shows besides the SPEC's relations, at two grains told apart by scope.
  scope 'data': one row for the whole of stg_events (messages, first and last event time) and the
  currency most orders are in (ties: the first by name); its category is '' (a category is never
  empty: an empty text is missing). scope 'cohort': one row per category of cohort_non_converted
  and the number of users in its cohort.
unique_key: [scope, category]
tags: [board]
*/
WITH span AS (
  SELECT
    COUNT(*) AS events,
    MIN(event_ts) AS first_event_at,
    MAX(event_ts) AS last_event_at
  FROM `stg_events`
), currencies AS (
  SELECT
    currency,
    ROW_NUMBER() OVER (ORDER BY COUNT(*) DESC, currency NULLS LAST) AS currency_rank
  FROM `fct_orders`
  WHERE
    NOT currency IS NULL
  GROUP BY
    currency
), main_currency AS (
  /* one row, null when no order has a currency */
  SELECT
    MAX(currency) AS currency
  FROM currencies
  WHERE
    currency_rank = 1
), cohort_sizes AS (
  /* one row per (category, user_key) in cohort_non_converted */
  SELECT
    category,
    COUNT(*) AS cohort_users
  FROM `cohort_non_converted`
  GROUP BY
    category
), summary AS (
  SELECT
    'data' AS scope,
    '' AS category,
    s.events,
    s.first_event_at,
    s.last_event_at,
    c.currency AS main_currency,
    CAST(NULL AS INT64) AS cohort_users
  FROM span AS s
  CROSS JOIN main_currency AS c
  UNION ALL
  SELECT
    'cohort' AS scope,
    category,
    CAST(NULL AS INT64) AS events,
    CAST(NULL AS DATETIME) AS first_event_at,
    CAST(NULL AS DATETIME) AS last_event_at,
    CAST(NULL AS STRING) AS main_currency,
    cohort_users
  FROM cohort_sizes
)
SELECT
  *
FROM summary
