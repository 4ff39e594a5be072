/*
description: >
  `Order Completed` messages deduplicated by order_id (the earliest by event time counts; equal
  times: the earlier load, then line, SPEC's Ties), with their products array. An order without
  order_id is keyed by its event_id. updated_load marks the orders a build wrote,
  previous_user_key the user an order had before (for the delete+insert models downstream).
# delete+insert, not a merge: when a later copy of a message wins in stg_events with other
# content (another order_id, another event), the order its old copy carried may have no message
# left, and a merge by order_id cannot delete it
materialized: incremental
incremental_strategy: delete+insert
unique_key: order_id
touched_keys: "{{ int_orders_touched(this) }}"
tags: [facts]
*/
with completed as (
    select
        {{ order_key() }} as order_id,
        event_id,
        user_key,
        event_ts as ordered_at,
        load_id,
        record_number,
        properties
    from {{ ref('stg_events') }}
    where message_type = 'track' and event_name = 'Order Completed'
),
{%- if is_incremental() %}

touched as (
    {{ int_orders_touched(this) }}
),
{%- endif %}

ranked as (
    select
        *,
        row_number() over (
            partition by order_id
            order by ordered_at, load_id, record_number
        ) as copy_rank
    from completed
    {%- if is_incremental() %}
    where order_id in (select order_id from touched)
    {%- endif %}
)

select
    r.order_id,
    r.event_id,
    r.user_key,
    r.ordered_at,
    {{ json_num('r.properties', '$.revenue') }} as stated_revenue,
    {{ json_num('r.properties', '$.total') }} as stated_total,
    {{ json_str('r.properties', '$.currency') }} as currency,
    r.properties,
    {{ batch_load_id() }} as updated_load,
    {%- if is_incremental() %}
    p.user_key as previous_user_key
    {%- else %}
    cast(null as varchar) as previous_user_key
    {%- endif %}
from ranked as r
{%- if is_incremental() %}
left join {{ this }} as p on r.order_id = p.order_id
{%- endif %}
where r.copy_rank = 1
