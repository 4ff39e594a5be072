-- fct_product_views: compiled for snowflake from fct_product_views.sql
/*
description: One row per deduplicated `Product Viewed`, with the viewed product's fields.
materialized: incremental
unique_key: event_id
tags: [facts]
*/
WITH views AS (
  SELECT
    event_id,
    user_key,
    event_ts AS viewed_at,
    JSON_EXTRACT_PATH_TEXT(properties, 'product_id') AS product_id,
    JSON_EXTRACT_PATH_TEXT(properties, 'sku') AS sku,
    JSON_EXTRACT_PATH_TEXT(properties, 'category') AS category,
    JSON_EXTRACT_PATH_TEXT(properties, 'name') AS name,
    TRY_CAST(TRIM(JSON_EXTRACT_PATH_TEXT(properties, 'price')) AS DOUBLE) AS price,
    0 AS updated_load
  FROM "stg_events"
  WHERE
    message_type = 'track' AND event_name = 'Product Viewed'
)
SELECT
  *
FROM views
