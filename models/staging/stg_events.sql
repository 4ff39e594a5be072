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
with raw as {{ not_materialized() }} (  -- scanned twice (keys, then payload), never held
    select coalesce(messages.message_id, messages.content_id) as event_id, messages.*
    from ({{ raw_messages() }}) as messages
),
{%- if is_incremental() %}

-- messages with a copy in a new load, and anonymous messages whose identity may change
new_copies as (
    select event_id, anonymous_id, user_id
    from raw
    where load_id > {{ watermark() }}
),

-- anonymousIds whose latest link may change: new links, and the links of the copies that a
-- re-decided message may replace
relinked as (
    select anonymous_id from new_copies
    where anonymous_id is not null and user_id is not null
    union
    select e.anonymous_id
    from {{ this }} as e
    where e.anonymous_id is not null and e.user_id is not null
        and e.event_id in (select event_id from new_copies)
),

affected as (
    select event_id from new_copies
    union
    select e.event_id
    from {{ this }} as e
    where e.user_id is null
        and e.anonymous_id in (select anonymous_id from relinked)
),
{%- endif %}

keyed as (
    -- narrow rows for the dedupe window; the payload joins back to the winners only
    select
        event_id,
        load_id,
        record_number,
        received_at,
        anonymous_id,
        user_id,
        event_ts
    from raw
    {%- if is_incremental() %}
    where event_id in (select event_id from affected)
    {%- endif %}
),

winners as (
    select event_id, load_id, record_number, received_at, anonymous_id, user_id, event_ts
    from (
        select
            *,
            row_number() over (
                partition by event_id
                order by received_at asc nulls last, load_id, record_number
            ) as copy_rank
        from keyed
    ) as ranked
    where copy_rank = 1
),

deduped as (
    -- the winners' payload: a semi join on two integers, so the join holds no strings
    select r.*
    from raw as r
    where exists (
        select 1 from winners as w
        where w.load_id = r.load_id and w.record_number = r.record_number
    )
),

identified as (
    -- every deduplicated message carrying both ids (for an increment: the messages written
    -- now, and the kept ones with the same anonymousIds); from the narrow winners, so that
    -- deduped (with the payload) is read once
    select anonymous_id, user_id, event_ts, load_id, record_number
    from winners
    where anonymous_id is not null and user_id is not null
    {%- if is_incremental() %}
    union all
    select e.anonymous_id, e.user_id, e.event_ts, e.load_id, e.record_number
    from {{ this }} as e
    where e.anonymous_id is not null and e.user_id is not null
        and e.anonymous_id in (select anonymous_id from winners)
        and not exists (select 1 from winners as w where w.event_id = e.event_id)
    {%- endif %}
),

anonymous_to_user as (
    select anonymous_id, user_id as stitched_user_id
    from (
        select
            anonymous_id,
            user_id,
            row_number() over (
                -- a tie goes to the later load, then the later line (SPEC: Ties)
                partition by anonymous_id
                order by event_ts desc, load_id desc, record_number desc
            ) as recency
        from identified
    ) as latest
    where recency = 1
),

stitched as (
    select
        d.event_id,
        d.message_type,
        case when d.message_type = 'track' then d.event else d.message_type end as event_name,
        coalesce(d.user_id, a.stitched_user_id, d.anonymous_id) as user_key,
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
        {{ batch_load_id() }} as updated_load
    from deduped as d
    left join anonymous_to_user as a
        on d.user_id is null and d.anonymous_id = a.anonymous_id
)

select * from stitched
