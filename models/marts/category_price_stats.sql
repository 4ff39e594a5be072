/*
description: >
  Price statistics per category over purchased lines in range: lines, orders, units, revenue,
  mean item price (Mixpanel's "average of price"), mean unit price, and rank by lines ordered.
unique_key: category
tags: [recipe]
*/
with lines as (
    select *
    from {{ ref('fct_product_purchases') }}
    where category is not null and {{ in_range('purchased_at') }}
),

per_category as (
    select
        category,
        count(*) as purchased_lines,
        count(distinct order_id) as orders,
        sum(quantity) as units,
        coalesce(sum(line_revenue), 0) as revenue,
        avg(price) as avg_item_price,
        {{ safe_div('sum(line_revenue)', 'sum(case when price is not null then quantity end)') }}
            as avg_unit_price
    from lines
    group by category
)

select
    *,
    rank() over (order by purchased_lines desc) as order_rank
from per_category
