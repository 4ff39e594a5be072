/*
description: >
  Per grain, period and user with a track, page or screen message in the period (in range):
  the revenue of their orders in the period and whether they ordered. What arpu_timeseries
  sums per segment; not a SPEC relation.
# delete+insert by user: a user's periods read only that user's messages and orders
materialized: incremental
incremental_strategy: delete+insert
unique_key: [grain, period_start, user_key]
touched_by: user_key
touched_keys: "{{ changed_users(orders=true) }}"
tags: [timeseries]
*/
with activity as (
    -- one row per user and active day: weeks and months are unions of days
    select distinct user_key, cast(event_ts as date) as active_day
    from {{ ref('stg_events') }}
    where message_type in ('track', 'page', 'screen') and {{ in_range('event_ts') }}
        {{ of_changed_users() }}
),

active_periods as (
    select distinct grain, period_start, user_key
    from ({{ by_grain('activity', 'active_day') }}) as g
),

orders as (
    select user_key, ordered_at, revenue
    from {{ ref('fct_orders') }}
    where {{ in_range('ordered_at') }}
        {{ of_changed_users() }}
),

order_periods as (
    select grain, period_start, user_key, sum(revenue) as revenue
    from ({{ by_grain('orders', 'ordered_at') }}) as g
    group by grain, period_start, user_key
)

select
    a.grain,
    a.period_start,
    a.user_key,
    coalesce(o.revenue, 0) as revenue,
    o.user_key is not null as is_purchaser
from active_periods as a
left join order_periods as o
    on a.grain = o.grain and a.period_start = o.period_start and a.user_key = o.user_key
