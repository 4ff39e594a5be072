/*
description: >
  One row per completed order. revenue = properties.revenue, else properties.total, else the sum
  of price * quantity over its products (0 when none has a price).
# delete+insert, as int_orders: an order whose message now carries another order has to
# disappear
materialized: incremental
incremental_strategy: delete+insert
unique_key: order_id
touched_keys: "{{ touched_orders(this) }}"
tags: [facts]
*/
{%- if is_incremental() %}
with touched as (
    {{ touched_orders(this) }}
),

line_totals as (
{%- else %}
with line_totals as (
{%- endif %}
    select
        order_id,
        count(*) as product_count,
        sum(line_revenue) as lines_revenue
    from {{ ref('fct_product_purchases') }}
    {%- if is_incremental() %}
    where order_id in (select order_id from touched)
    {%- endif %}
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
    {%- if is_incremental() %}
    where o.order_id in (select order_id from touched)
    {%- endif %}
)

select * from orders
