-- int_event_users: compiled for bigquery from int_event_users.sql
/*
description: >
  One row per message of stg_events with its user_key, and, for the messages a build rewrote
  (updated_load), the user_key they had before (previous_user_key; null for a new message):
  the delete+insert models downstream also update the user a message moved away from (it was
  re-decided, or re-stitched to another user). Kept apart from stg_events, whose rows are the
  same however the data was loaded.
materialized: incremental
incremental_strategy: delete+insert
unique_key: event_id
touched_keys: "select event_id from "stg_events" where updated_load > 0"
tags: [facts]
*/
SELECT
  s.event_id,
  s.user_key,
  0 AS updated_load,
  CAST(NULL AS STRING) AS previous_user_key
FROM `stg_events` AS s
