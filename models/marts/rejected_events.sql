/*
description: >
  Every input line that could not be loaded, with the file, physical line number, raw text and
  reason. A line rejected again by re-ingesting the same file is kept once (its first load);
  when a file at the same path changed (a daily export written again), its changed lines are
  other lines, kept with their own load_id.
unique_key: [source_file, line_number, load_id]
tags: [quality]
*/
{% if source_format == 'segment_warehouse' -%}
-- Segment's warehouse destination keeps no rejected lines: the relation exists, empty.
with ranked as (
    select
        cast(null as varchar) as source_file, cast(null as bigint) as line_number,
        cast(null as varchar) as raw, cast(null as varchar) as reason,
        cast(null as timestamp) as loaded_at, cast(null as bigint) as load_id, 1 as copy_rank
    where false
)
{%- else -%}
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
    where {{ recorded_load('load_id') }}
)
{%- endif %}

select source_file, line_number, raw, reason, loaded_at, load_id
from ranked
where copy_rank = 1
