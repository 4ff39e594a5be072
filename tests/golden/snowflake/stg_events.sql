-- stg_events: compiled for snowflake from stg_events.sql
/*
description: >
  One row per Segment message, deduplicated by messageId (the copy with the earliest receivedAt,
  then load order, wins), with event time in UTC and the stitched identity `user_key`: the userId,
  else the userId of the latest message carrying both this anonymousId and a userId, else the
  anonymousId. `context` stays in raw_events (it is large and no model reads it).
  Messages without a messageId get `md5:` + the hash of their raw text as event_id.
  Incremental: a build re-decides only the messages whose messageId arrived in a new load (all
  their copies are still in raw_events) and re-stitches the anonymous messages whose
  anonymousId may have gained or lost a link: it appeared with a userId in a new load, or the
  kept copy of a re-decided message carried it with a userId (the new winner may have lost the
  userId or carry another anonymousId); updated_load marks the rows it wrote.
materialized: incremental
unique_key: event_id
tags: [staging]
*/
WITH raw AS (
  SELECT
    COALESCE(messages.message_id, messages.content_id) AS event_id,
    messages.*
  FROM (
    SELECT
      message_id,
      content_id,
      load_id,
      record_number,
      message_type,
      event,
      user_id,
      anonymous_id,
      event_ts,
      received_at,
      sent_at,
      properties,
      traits,
      source_file,
      line_number
    FROM "raw_events"
    WHERE
      load_id IN (
        SELECT
          load_id
        FROM "raw_loads"
      )
  ) AS messages
), keyed AS (
  /* narrow rows for the dedupe window; the payload joins back to the winners only */
  SELECT
    event_id,
    load_id,
    record_number,
    received_at,
    anonymous_id,
    user_id,
    event_ts
  FROM raw
), winners AS (
  SELECT
    event_id,
    load_id,
    record_number,
    received_at,
    anonymous_id,
    user_id,
    event_ts
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at ASC, load_id, record_number) AS copy_rank
    FROM keyed
  ) AS ranked
  WHERE
    copy_rank = 1
), deduped AS (
  /* the winners' payload: a semi join on two integers, so the join holds no strings */
  SELECT
    r.*
  FROM raw AS r
  WHERE
    EXISTS(
      SELECT
        1
      FROM winners AS w
      WHERE
        w.load_id = r.load_id AND w.record_number = r.record_number
    )
), identified AS (
  /* every deduplicated message carrying both ids (for an increment: the messages written */
  /* now, and the kept ones with the same anonymousIds); from the narrow winners, so that */
  /* deduped (with the payload) is read once */
  SELECT
    anonymous_id,
    user_id,
    event_ts,
    load_id,
    record_number
  FROM winners
  WHERE
    NOT anonymous_id IS NULL AND NOT user_id IS NULL
), anonymous_to_user AS (
  SELECT
    anonymous_id,
    user_id AS stitched_user_id
  FROM (
    SELECT
      anonymous_id,
      user_id,
      ROW_NUMBER() OVER (
        PARTITION BY anonymous_id
        ORDER BY event_ts DESC NULLS LAST, load_id DESC NULLS LAST, record_number DESC NULLS LAST
      ) AS recency
    FROM identified
  ) AS latest
  WHERE
    recency = 1
), stitched AS (
  SELECT
    d.event_id,
    d.message_type,
    CASE WHEN d.message_type = 'track' THEN d.event ELSE d.message_type END AS event_name,
    COALESCE(d.user_id, a.stitched_user_id, d.anonymous_id) AS user_key,
    d.user_id,
    d.anonymous_id,
    d.event_ts,
    d.received_at,
    d.sent_at,
    d.properties,
    d.traits,
    d.load_id,
    d.record_number,
    d.source_file,
    d.line_number,
    0 AS updated_load
  FROM deduped AS d
  LEFT JOIN anonymous_to_user AS a
    ON d.user_id IS NULL AND d.anonymous_id = a.anonymous_id
)
SELECT
  *
FROM stitched
