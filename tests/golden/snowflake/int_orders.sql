-- int_orders: compiled for snowflake from int_orders.sql
/*
description: >
  `Order Completed` messages deduplicated by order_id (the earliest by event time counts; equal
  times: the earlier load, then line, SPEC's Ties), with their products array. An order without
  order_id is keyed by its event_id. updated_load marks the orders a build wrote,
  previous_user_key the user an order had before (for the delete+insert models downstream).
# delete+insert, not a merge: when a later copy of a message wins in stg_events with other
# content (another order_id, another event), the order its old copy carried may have no message
# left, and a merge by order_id cannot delete it
materialized: incremental
incremental_strategy: delete+insert
unique_key: order_id
touched_keys: "select order_id from "int_orders" where event_id in (select event_id from "stg_events" where updated_load > 0)
union
select coalesce(case when trim(json_extract_string(properties, '$.order_id'), (' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13))) <> '' then json_extract_string(properties, '$.order_id') end, event_id) as order_id
from "stg_events"
where updated_load > 0
    and message_type = 'track' and event_name = 'Order Completed'"
tags: [facts]
*/
WITH completed AS (
  SELECT
    COALESCE(
      CASE
        WHEN TRIM(
          JSON_EXTRACT_PATH_TEXT(properties, 'order_id'),
          (
            ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
          )
        ) <> ''
        THEN JSON_EXTRACT_PATH_TEXT(properties, 'order_id')
      END,
      event_id
    ) AS order_id,
    event_id,
    user_key,
    event_ts AS ordered_at,
    load_id,
    record_number,
    properties
  FROM "stg_events"
  WHERE
    message_type = 'track' AND event_name = 'Order Completed'
), ranked AS (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY ordered_at, load_id, record_number) AS copy_rank
  FROM completed
)
SELECT
  r.order_id,
  r.event_id,
  r.user_key,
  r.ordered_at,
  TRY_CAST(NULLIF(
    TRIM(
      JSON_EXTRACT_PATH_TEXT(r.properties, 'revenue'),
      (
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      )
    ),
    ''
  ) AS DOUBLE) AS stated_revenue,
  TRY_CAST(NULLIF(
    TRIM(
      JSON_EXTRACT_PATH_TEXT(r.properties, 'total'),
      (
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      )
    ),
    ''
  ) AS DOUBLE) AS stated_total,
  CASE
    WHEN TRIM(
      JSON_EXTRACT_PATH_TEXT(r.properties, 'currency'),
      (
        ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
      )
    ) <> ''
    THEN JSON_EXTRACT_PATH_TEXT(r.properties, 'currency')
  END AS currency,
  r.properties,
  0 AS updated_load,
  CAST(NULL AS VARCHAR) AS previous_user_key
FROM ranked AS r
WHERE
  r.copy_rank = 1
