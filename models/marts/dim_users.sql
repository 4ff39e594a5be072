/*
description: >
  One row per user_key: first and last event time over all their messages, and per trait the
  latest non-null value from `identify` messages (equal times: the later load, then line).
  is_identified: some message of the user carries a userId (otherwise user_key is an
  anonymousId).
# delete+insert by user: the users whose messages changed, where they are now and where they
# were (a user whose messages were all stitched to another is only deleted)
materialized: incremental
incremental_strategy: delete+insert
unique_key: user_key
touched_keys: "{{ changed_users() }}"
tags: [users]
*/
with messages as (
    select user_key, user_id, event_ts, load_id, record_number, message_type, traits
    from {{ ref('stg_events') }}
    {{ of_changed_users('where', orders=false) }}
),

seen as (
    select
        user_key,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at,
        max(case when user_id is not null then 1 else 0 end) = 1 as is_identified
    from messages
    group by user_key
),

traits as (
    select
        user_key,
        event_ts,
        load_id,
        record_number,
        {{ json_str('traits', '$.email') }} as email,
        {{ json_str('traits', '$.phone') }} as phone
    from messages
    where message_type = 'identify'
),
{%- for trait in ['email', 'phone'] %}

latest_{{ trait }} as (
    select user_key, {{ trait }}
    from (
        select user_key, {{ trait }}, row_number() over (
            -- a tie goes to the later load, then the later line (SPEC: Ties)
            partition by user_key
            order by event_ts desc, load_id desc, record_number desc
        ) as recency
        from traits
        where {{ trait }} is not null
    ) as ranked
    where recency = 1
){{ ',' if not loop.last }}
{%- endfor %}

select
    s.user_key,
    s.first_seen_at,
    s.last_seen_at,
    e.email,
    p.phone,
    s.is_identified
from seen as s
left join latest_email as e on s.user_key = e.user_key
left join latest_phone as p on s.user_key = p.user_key
