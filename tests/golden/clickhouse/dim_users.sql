-- dim_users: compiled for clickhouse from dim_users.sql
/*
description: >
  One row per user_key: first and last event time over all their messages, and per trait the
  latest non-null value from `identify` messages (equal times: the later load, then line).
  is_identified: some message of the user carries a userId (otherwise user_key is an
  anonymousId).
unique_key: user_key
tags: [users]
*/
WITH seen AS (
  SELECT
    user_key,
    MIN(event_ts) AS first_seen_at,
    MAX(event_ts) AS last_seen_at,
    MAX(CASE WHEN NOT (
      user_id IS NULL
    ) THEN 1 ELSE 0 END) = 1 AS is_identified
  FROM "stg_events"
  GROUP BY
    user_key
), traits AS (
  SELECT
    user_key,
    event_ts,
    received_at,
    load_id,
    record_number,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(traits, 'email')) <> ''
      THEN JSONExtractString(traits, 'email')
    END AS email,
    CASE
      WHEN TRIM(BOTH (
        ' ' || CHAR(9) || CHAR(10) || CHAR(11) || CHAR(12) || CHAR(13)
      ) FROM JSONExtractString(traits, 'phone')) <> ''
      THEN JSONExtractString(traits, 'phone')
    END AS phone
  FROM "stg_events"
  WHERE
    message_type = 'identify'
), latest_email AS (
  SELECT
    user_key,
    email
  FROM (
    SELECT
      user_key,
      email,
      ROW_NUMBER() OVER (
        PARTITION BY user_key
        ORDER BY event_ts DESC, received_at DESC, load_id DESC, record_number DESC
      ) AS recency
    FROM traits
    WHERE
      NOT (
        email IS NULL
      )
  ) AS ranked
  WHERE
    recency = 1
), latest_phone AS (
  SELECT
    user_key,
    phone
  FROM (
    SELECT
      user_key,
      phone,
      ROW_NUMBER() OVER (
        PARTITION BY user_key
        ORDER BY event_ts DESC, received_at DESC, load_id DESC, record_number DESC
      ) AS recency
    FROM traits
    WHERE
      NOT (
        phone IS NULL
      )
  ) AS ranked
  WHERE
    recency = 1
)
SELECT
  s.user_key,
  s.first_seen_at,
  s.last_seen_at,
  e.email,
  p.phone,
  s.is_identified
FROM seen AS s
LEFT JOIN latest_email AS e
  ON s.user_key = e.user_key
LEFT JOIN latest_phone AS p
  ON s.user_key = p.user_key
