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
with completed as (
    select
        coalesce({{ json_str('properties', '$.order_id') }}, event_id) as order_id,
        event_id,
        user_key,
        event_ts as ordered_at,
        received_at,
        load_id,
        record_number,
        properties
    from {{ ref('stg_events') }}
    where message_type = 'track' and event_name = 'Order Completed'
),

ranked as (
    select
        *,
        row_number() over (
            partition by order_id
            order by ordered_at, received_at nulls last, load_id, record_number
        ) as copy_rank
    from completed
)

select
    order_id,
    event_id,
    user_key,
    ordered_at,
    {{ json_num('properties', '$.revenue') }} as stated_revenue,
    {{ json_num('properties', '$.total') }} as stated_total,
    {{ json_str('properties', '$.currency') }} as currency,
    properties
from ranked
where copy_rank = 1
