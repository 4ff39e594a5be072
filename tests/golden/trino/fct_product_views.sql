-- fct_product_views: compiled for trino from fct_product_views.sql
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
      WHEN TRIM((
        CONCAT(
          CAST(' ' AS VARCHAR),
          CAST(CHR(  9) AS VARCHAR),
          CAST(CHR(  10) AS VARCHAR),
          CAST(CHR(  11) AS VARCHAR),
          CAST(CHR(  12) AS VARCHAR),
          CAST(CHR(  13) AS VARCHAR)
        )
      ) FROM JSON_EXTRACT_SCALAR(properties, '$.product_id')) <> ''
      THEN JSON_EXTRACT_SCALAR(properties, '$.product_id')
    END AS product_id,
    CASE
      WHEN TRIM((
        CONCAT(
          CAST(' ' AS VARCHAR),
          CAST(CHR(  9) AS VARCHAR),
          CAST(CHR(  10) AS VARCHAR),
          CAST(CHR(  11) AS VARCHAR),
          CAST(CHR(  12) AS VARCHAR),
          CAST(CHR(  13) AS VARCHAR)
        )
      ) FROM JSON_EXTRACT_SCALAR(properties, '$.sku')) <> ''
      THEN JSON_EXTRACT_SCALAR(properties, '$.sku')
    END AS sku,
    CASE
      WHEN TRIM((
        CONCAT(
          CAST(' ' AS VARCHAR),
          CAST(CHR(  9) AS VARCHAR),
          CAST(CHR(  10) AS VARCHAR),
          CAST(CHR(  11) AS VARCHAR),
          CAST(CHR(  12) AS VARCHAR),
          CAST(CHR(  13) AS VARCHAR)
        )
      ) FROM JSON_EXTRACT_SCALAR(properties, '$.category')) <> ''
      THEN JSON_EXTRACT_SCALAR(properties, '$.category')
    END AS category,
    CASE
      WHEN TRIM((
        CONCAT(
          CAST(' ' AS VARCHAR),
          CAST(CHR(  9) AS VARCHAR),
          CAST(CHR(  10) AS VARCHAR),
          CAST(CHR(  11) AS VARCHAR),
          CAST(CHR(  12) AS VARCHAR),
          CAST(CHR(  13) AS VARCHAR)
        )
      ) FROM JSON_EXTRACT_SCALAR(properties, '$.name')) <> ''
      THEN JSON_EXTRACT_SCALAR(properties, '$.name')
    END AS name,
    TRY_CAST(NULLIF(
      TRIM((
        CONCAT(
          CAST(' ' AS VARCHAR),
          CAST(CHR(  9) AS VARCHAR),
          CAST(CHR(  10) AS VARCHAR),
          CAST(CHR(  11) AS VARCHAR),
          CAST(CHR(  12) AS VARCHAR),
          CAST(CHR(  13) AS VARCHAR)
        )
      ) FROM JSON_EXTRACT_SCALAR(properties, '$.price')),
      ''
    ) AS DOUBLE) AS price
  FROM "stg_events"
  WHERE
    message_type = 'track' AND event_name = 'Product Viewed'
)
SELECT
  *
FROM views
