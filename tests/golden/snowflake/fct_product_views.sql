-- fct_product_views: compiled for snowflake from fct_product_views.sql
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
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(properties, 'product_id'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(properties, 'product_id')
    END AS product_id,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(properties, 'sku'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(properties, 'sku')
    END AS sku,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(properties, 'category'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(properties, 'category')
    END AS category,
    CASE
      WHEN TRIM(
        JSON_EXTRACT_PATH_TEXT(properties, 'name'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ) <> ''
      THEN JSON_EXTRACT_PATH_TEXT(properties, 'name')
    END AS name,
    TRY_CAST(NULLIF(
      TRIM(
        JSON_EXTRACT_PATH_TEXT(properties, 'price'),
        (
          ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
        )
      ),
      ''
    ) AS DOUBLE) AS price
  FROM "stg_events"
  WHERE
    message_type = 'track' AND event_name = 'Product Viewed'
)
SELECT
  *
FROM views
