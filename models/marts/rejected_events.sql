/*
description: >
  Every input line that could not be loaded, with the file, physical line number, raw text and
  reason. A line rejected again by re-ingesting the same file is kept once (its first load).
unique_key: [source_file, line_number]
tags: [quality]
*/
with ranked as (
    select
        source_file,
        line_number,
        raw,
        reason,
        loaded_at,
        load_id,
        row_number() over (
            partition by source_file, line_number, raw order by load_id
        ) as copy_rank
    from {{ source('segment', 'raw_rejected') }}
)

select source_file, line_number, raw, reason, loaded_at, load_id
from ranked
where copy_rank = 1
