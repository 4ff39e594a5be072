/*
description: >
  One row per product line of a completed order (Mixpanel's "Product Purchased" from "Generate
  Purchase Event Per Product"). quantity defaults to 1; a product without a price keeps null price
  and line_revenue. event_id is the order's kept Order Completed message.
# delete+insert by order, not a merge: an order whose earliest copy arrives late with fewer
# products must lose lines, and a merge by (order_id, line_number) cannot delete lines of an
# order that now has fewer (or of an order that is gone)
materialized: incremental
incremental_strategy: delete+insert
unique_key: [order_id, line_number]
touched_by: order_id
touched_keys: "{{ touched_orders(this) }}"
tags: [facts]
*/
{%- if is_incremental() %}
{%- set orders -%}
(select * from {{ ref('int_orders') }}
 where order_id in ({{ touched_orders(this) }}))
{%- endset %}
{%- else %}
{%- set orders = ref('int_orders') %}
{%- endif %}
with lines as (
    select
        l.order_id,
        cast(l.position as integer) as line_number,
        l.user_key,
        l.ordered_at as purchased_at,
        {{ json_str('l.element', '$.product_id') }} as product_id,
        {{ json_str('l.element', '$.sku') }} as sku,
        {{ json_str('l.element', '$.category') }} as category,
        {{ json_str('l.element', '$.name') }} as name,
        {{ json_num('l.element', '$.price') }} as price,
        coalesce({{ json_num('l.element', '$.quantity') }}, 1) as quantity,
        l.event_id
    from {{ json_array_rows(orders, '$.products', 'l') }}
)

select
    order_id,
    line_number,
    user_key,
    purchased_at,
    product_id,
    sku,
    category,
    name,
    price,
    quantity,
    price * quantity as line_revenue,
    event_id
from lines
