-- derived_funnel_users: compiled for bigquery from derived_funnel_users.sql
/*
description: >
  Per (category, user) who viewed the category in range: funnel entry, conversion (first
  qualifying purchase of the category within conversion_window_days) and their views. Derived
  from the marts fct_product_views and fct_product_purchases for category_funnel; not a SPEC
  relation.
# delete+insert by user: a (category, user)'s funnel reads only that user's views and purchases
# of the category, so a build recomputes the users whose views or purchased lines changed
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
tags: [funnel]
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
)
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
          MIN(viewed_at) + INTERVAL '7' DAY
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
