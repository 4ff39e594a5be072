-- cohort_non_converted: compiled for snowflake from cohort_non_converted.sql
/*
description: >
  The recipe's step 3: per category, the users who viewed it and did not convert. When var
  promo_start is set, only events before it count (views and purchases), so the cohort is fixed
  before the promotion; otherwise it is the funnel's non-converted users over the range.
# delete+insert by user, as derived_funnel_users; a user's email and phone (dim_users) change
# only with their own messages, so with the same users
materialized: incremental
incremental_strategy: delete+insert
unique_key: [category, user_key]
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
tags: [recipe, cohort]
*/
WITH views AS (
  SELECT
    category,
    user_key,
    viewed_at
  FROM "fct_product_views"
  WHERE
    NOT category IS NULL AND TRUE AND TRUE AND TRUE
), purchases AS (
  SELECT
    category,
    user_key,
    purchased_at
  FROM "fct_product_purchases"
  WHERE
    TRUE
), non_converted AS (
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
    ), per_user AS (
      SELECT
        category,
        user_key,
        MIN(viewed_at) AS first_viewed_at,
        MAX(viewed_at) AS last_viewed_at,
        COUNT(*) AS views,
        MIN(viewed_at) AS entered_at,
        CASE
          WHEN MIN(next_purchase_at) <= (
            MIN(viewed_at) + INTERVAL '7 DAY'
          )
          THEN MIN(next_purchase_at)
        END AS converted_at
      FROM view_next
      GROUP BY
        category,
        user_key
    )
    SELECT
      *
    FROM per_user
  ) AS funnel
  WHERE
    converted_at IS NULL
)
SELECT
  n.category,
  n.user_key,
  n.first_viewed_at,
  n.last_viewed_at,
  n.views,
  u.email,
  u.phone
FROM non_converted AS n
LEFT JOIN "dim_users" AS u
  ON n.user_key = u.user_key
