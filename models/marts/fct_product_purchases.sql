/*
description: >
  One row per product line of a completed order (Mixpanel's "Product Purchased" from "Generate
  Purchase Event Per Product"). quantity defaults to 1; a product without a price keeps null price
  and line_revenue.
# a table, not incremental: an order whose earliest copy arrives late with fewer products must
# lose lines, and a merge by order_id cannot delete lines of an order that now has none (or of
# an order that is gone)
materialized: table
unique_key: [order_id, line_number]
tags: [facts]
*/
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
        coalesce({{ json_num('l.element', '$.quantity') }}, 1) as quantity
    from {{ json_array_rows(ref('int_orders'), '$.products', 'l') }}
)

select
    *,
    price * quantity as line_revenue
from lines
