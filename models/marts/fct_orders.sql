/*
description: >
  One row per completed order. revenue = properties.revenue, else properties.total, else the sum
  of price * quantity over its products (0 when none has a price).
# a table, as int_orders: an order whose message now carries another order has to disappear
materialized: table
unique_key: order_id
tags: [facts]
*/
with line_totals as (
    select
        order_id,
        count(*) as product_count,
        sum(line_revenue) as lines_revenue
    from {{ ref('fct_product_purchases') }}
    group by order_id
),

orders as (
    select
        o.order_id,
        o.user_key,
        o.ordered_at,
        coalesce(o.stated_revenue, o.stated_total, l.lines_revenue, 0) as revenue,
        o.currency,
        coalesce(l.product_count, 0) as product_count,
        o.event_id
    from {{ ref('int_orders') }} as o
    left join line_totals as l on o.order_id = l.order_id
)

select * from orders
