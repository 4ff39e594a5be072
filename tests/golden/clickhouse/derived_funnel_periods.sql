-- derived_funnel_periods: compiled for clickhouse from derived_funnel_periods.sql
/*
description: >
  Per grain, period, category and user who viewed the category in that period (in range): the
  first qualifying purchase within conversion_window_days of their first view of the category in
  the period (null when none; it may fall after the period). What
  category_conversion_timeseries counts per segment; not a SPEC relation.
# delete+insert by user: a user's funnel in a period reads only that user's views and purchases
materialized: incremental
incremental_strategy: delete+insert
unique_key: [grain, period_start, category, user_key]
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
tags: [funnel, timeseries]
*/
WITH views AS (
  SELECT
    category,
    user_key,
    viewed_at
  FROM "fct_product_views"
  WHERE
    NOT (
      category IS NULL
    ) AND TRUE AND TRUE
), purchases AS (
  SELECT
    category,
    user_key,
    purchased_at
  FROM "fct_product_purchases"
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
        NOT (
          category IS NULL
        )
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
          CAST(dateTrunc('DAY', viewed_at) AS Nullable(DATE)) AS period_start,
          r.*
        FROM view_next AS r
        UNION ALL
        SELECT
          'week' AS grain,
          CAST(dateTrunc('WEEK', viewed_at) AS Nullable(DATE)) AS period_start,
          r.*
        FROM view_next AS r
        UNION ALL
        SELECT
          'month' AS grain,
          CAST(dateTrunc('MONTH', viewed_at) AS Nullable(DATE)) AS period_start,
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
)
SELECT
  grain,
  period_start,
  category,
  user_key,
  converted_at
FROM funnel
