-- int_orders: compiled for clickhouse from int_orders.sql
/*
description: >
  `Order Completed` messages deduplicated by order_id (the earliest by event time, then receivedAt,
  then load and line, counts), with their products array. An order without order_id is keyed by
  its event_id.
# a table, not incremental: when a later copy of a message wins in stg_events with other content
# (another order_id, another event), the order its old copy carried may have no message left,
# and a merge by order_id cannot delete it
materialized: table
unique_key: order_id
tags: [facts]
*/
WITH completed AS (
  SELECT
    COALESCE(
      CASE
        WHEN TRIM(BOTH (
          ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
        ) FROM JSONExtractString(properties, 'order_id')) <> ''
        THEN JSONExtractString(properties, 'order_id')
      END,
      event_id
    ) AS order_id,
    event_id,
    user_key,
    event_ts AS ordered_at,
    received_at,
    load_id,
    record_number,
    properties
  FROM "stg_events"
  WHERE
    message_type = 'track' AND event_name = 'Order Completed'
), ranked AS (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY ordered_at, received_at, load_id, record_number) AS copy_rank
  FROM completed
)
SELECT
  order_id,
  event_id,
  user_key,
  ordered_at,
  toFloat64OrNull(TRIM(JSONExtractString(properties, 'revenue'))) AS stated_revenue,
  toFloat64OrNull(TRIM(JSONExtractString(properties, 'total'))) AS stated_total,
  CASE
    WHEN TRIM(BOTH (
      ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
    ) FROM JSONExtractString(properties, 'currency')) <> ''
    THEN JSONExtractString(properties, 'currency')
  END AS currency,
  properties
FROM ranked
WHERE
  copy_rank = 1
