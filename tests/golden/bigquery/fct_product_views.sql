-- fct_product_views: compiled for bigquery from fct_product_views.sql
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
    JSON_EXTRACT_SCALAR(properties, '$.product_id') AS product_id,
    JSON_EXTRACT_SCALAR(properties, '$.sku') AS sku,
    JSON_EXTRACT_SCALAR(properties, '$.category') AS category,
    JSON_EXTRACT_SCALAR(properties, '$.name') AS name,
    SAFE_CAST(TRIM(JSON_EXTRACT_SCALAR(properties, '$.price')) AS FLOAT64) AS price,
    0 AS updated_load
  FROM `stg_events`
  WHERE
    message_type = 'track' AND event_name = 'Product Viewed'
)
SELECT
  *
FROM views
