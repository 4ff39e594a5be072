-- rejected_events: compiled for clickhouse from rejected_events.sql
/*
description: >
  Every input line that could not be loaded, with the file, physical line number, raw text and
  reason. A line rejected again by re-ingesting the same file is kept once (its first load);
  when a file at the same path changed (a daily export written again), its changed lines are
  other lines, kept with their own load_id.
unique_key: [source_file, line_number, load_id]
tags: [quality]
*/
WITH ranked AS (
  SELECT
    source_file,
    line_number,
    raw,
    reason,
    loaded_at,
    load_id,
    ROW_NUMBER() OVER (PARTITION BY source_file, line_number, raw ORDER BY load_id) AS copy_rank
  FROM "raw_rejected"
  WHERE
    load_id IN (
      SELECT
        load_id
      FROM "raw_loads"
    )
)
SELECT
  source_file,
  line_number,
  raw,
  reason,
  loaded_at,
  load_id
FROM ranked
WHERE
  copy_rank = 1
