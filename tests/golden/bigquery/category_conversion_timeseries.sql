-- category_conversion_timeseries: compiled for bigquery from category_conversion_timeseries.sql
/*
description: >
  The recipe's main metric #2 over time (Mixpanel's funnel line chart): per grain, period,
  segment and category, the users whose first view of the category within the period converted
  within the window (the purchase may fall after the period).
unique_key: [grain, period_start, segment, category]
tags: [recipe, timeseries]
*/
WITH views AS (
  SELECT
    category,
    user_key,
    viewed_at
  FROM `fct_product_views`
  WHERE
    NOT category IS NULL AND TRUE AND TRUE
), purchases AS (
  SELECT
    category,
    user_key,
    purchased_at
  FROM `fct_product_purchases`
), funnel AS (
  SELECT
    *
  FROM (
    WITH stream AS (
      SELECT
        category,
        user_key,
        viewed_at AS ts,
        0 AS kind
      FROM views
      UNION ALL
      SELECT
        category,
        user_key,
        purchased_at AS ts,
        1 AS kind
      FROM purchases
      WHERE
        NOT category IS NULL
    ), with_next AS (
      SELECT
        category,
        user_key,
        ts AS viewed_at,
        kind,
        MIN(CASE WHEN kind = 1 THEN ts END) OVER (
          PARTITION BY user_key, category
          ORDER BY ts, kind
          rows BETWEEN CURRENT ROW AND UNBOUNDED following
        ) AS next_purchase_at
      FROM stream
    ), view_next AS (
      SELECT
        category,
        user_key,
        viewed_at,
        next_purchase_at
      FROM with_next
      WHERE
        kind = 0
    ), period_views AS (
      SELECT
        *
      FROM (
        SELECT
          'day' AS grain,
          CAST(TIMESTAMP_TRUNC(viewed_at, DAY) AS DATE) AS period_start,
          r.*
        FROM view_next AS r
        UNION ALL
        SELECT
          'week' AS grain,
          CAST(TIMESTAMP_TRUNC(viewed_at, ISOWEEK) AS DATE) AS period_start,
          r.*
        FROM view_next AS r
        UNION ALL
        SELECT
          'month' AS grain,
          CAST(TIMESTAMP_TRUNC(viewed_at, MONTH) AS DATE) AS period_start,
          r.*
        FROM view_next AS r
      ) AS g
    ), per_user AS (
      SELECT
        grain,
        period_start,
        category,
        user_key,
        MIN(viewed_at) AS first_viewed_at,
        MAX(viewed_at) AS last_viewed_at,
        COUNT(*) AS views,
        MIN(viewed_at) AS entered_at,
        CASE
          WHEN MIN(next_purchase_at) <= (
            MIN(viewed_at) + INTERVAL '7' DAY
          )
          THEN MIN(next_purchase_at)
        END AS converted_at
      FROM period_views
      GROUP BY
        grain,
        period_start,
        category,
        user_key
    )
    SELECT
      *
    FROM per_user
  ) AS f
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
  INNER JOIN `derived_user_segments` AS s
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
    CAST(purchasers AS FLOAT64) / NULLIF(CAST(viewers AS FLOAT64), 0)
  ) AS conversion_rate
FROM per_segment
