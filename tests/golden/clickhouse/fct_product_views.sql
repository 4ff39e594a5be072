-- fct_product_views: compiled for clickhouse from fct_product_views.sql
/*
description: One row per deduplicated `Product Viewed`, with the viewed product's fields.
# delete+insert, not a merge: when a later copy of a message wins in stg_events as another
# event, its view has to disappear, and a merge by event_id cannot delete it
materialized: incremental
incremental_strategy: delete+insert
unique_key: event_id
touched_keys: "select event_id from "stg_events" where updated_load > 0"
tags: [facts]
*/
WITH views AS (
  SELECT
    event_id,
    user_key,
    event_ts AS viewed_at,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(properties, 'product_id')) <> ''
      THEN JSONExtractString(properties, 'product_id')
    END AS product_id,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(properties, 'sku')) <> ''
      THEN JSONExtractString(properties, 'sku')
    END AS sku,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(properties, 'category')) <> ''
      THEN JSONExtractString(properties, 'category')
    END AS category,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(properties, 'name')) <> ''
      THEN JSONExtractString(properties, 'name')
    END AS name,
    toFloat64OrNull(
      TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(properties, 'price'))
    ) AS price
  FROM "stg_events"
  WHERE
    message_type = 'track' AND event_name = 'Product Viewed'
)
SELECT
  *
FROM views
