/*
description: One row per deduplicated `Product Viewed`, with the viewed product's fields.
# delete+insert, not a merge: when a later copy of a message wins in stg_events as another
# event, its view has to disappear, and a merge by event_id cannot delete it
materialized: incremental
incremental_strategy: delete+insert
unique_key: event_id
touched_keys: "{{ changed_events() }}"
tags: [facts]
*/
with views as (
    select
        event_id,
        user_key,
        event_ts as viewed_at,
        {{ json_str('properties', '$.product_id') }} as product_id,
        {{ json_str('properties', '$.sku') }} as sku,
        {{ json_str('properties', '$.category') }} as category,
        {{ json_str('properties', '$.name') }} as name,
        {{ json_num('properties', '$.price') }} as price
    from {{ ref('stg_events') }}
    where message_type = 'track' and event_name = 'Product Viewed'
        {%- if is_incremental() %}
        and updated_load > {{ watermark() }}
        {%- endif %}
)

select * from views
