/*
description: >
  The recipe's main metric #1 over time: per grain (day, ISO week, month), period and segment
  (all, cohort of the target category, non_cohort): revenue of orders in the period, active users
  (a track, page or screen message in the period), purchasers, ARPU and ARPPU.
unique_key: [grain, period_start, segment]
tags: [recipe, timeseries]
*/
with activity as (
    -- one row per user and active day: weeks and months are unions of days
    select distinct user_key, cast(event_ts as date) as active_day
    from {{ ref('stg_events') }}
    where message_type in ('track', 'page', 'screen') and {{ in_range('event_ts') }}
),

active_periods as (
    select distinct grain, period_start, user_key
    from ({{ by_grain('activity', 'active_day') }}) as g
),

orders as (
    select user_key, ordered_at, revenue
    from {{ ref('fct_orders') }}
    where {{ in_range('ordered_at') }}
),

order_periods as (
    select grain, period_start, user_key, sum(revenue) as revenue
    from ({{ by_grain('orders', 'ordered_at') }}) as g
    group by grain, period_start, user_key
),

per_user as (
    select
        a.grain,
        a.period_start,
        a.user_key,
        coalesce(o.revenue, 0) as revenue,
        o.user_key is not null as is_purchaser
    from active_periods as a
    left join order_periods as o
        on a.grain = o.grain and a.period_start = o.period_start and a.user_key = o.user_key
),

segmented as (
    {{ segment_rows('per_user') }}
),

per_segment as (
    select
        grain,
        period_start,
        segment,
        sum(revenue) as revenue,
        count(*) as active_users,
        -- a count is a bigint (DuckDB sums integers into a 128-bit HUGEINT)
        cast(sum(case when is_purchaser then 1 else 0 end) as bigint) as purchasers
    from segmented
    group by grain, period_start, segment
)

select
    grain,
    period_start,
    segment,
    revenue,
    active_users,
    purchasers,
    {{ safe_div('revenue', 'active_users') }} as arpu,
    {{ safe_div('revenue', 'purchasers') }} as arppu
from per_segment
