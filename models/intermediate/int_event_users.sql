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
touched_keys: "{{ changed_events() }}"
tags: [facts]
*/
select
    s.event_id,
    s.user_key,
    {{ batch_load_id() }} as updated_load,
    {%- if is_incremental() %}
    p.user_key as previous_user_key
    {%- else %}
    cast(null as varchar) as previous_user_key
    {%- endif %}
from {{ ref('stg_events') }} as s
{%- if is_incremental() %}
left join {{ this }} as p on s.event_id = p.event_id
where s.updated_load > {{ watermark() }}
{%- endif %}
