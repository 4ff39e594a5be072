/*
description: >
  The recipe's main metric #1 over time: per grain (day, ISO week, month), period and segment
  (all, cohort of the target category, non_cohort): revenue of orders in the period, active users
  (a track, page or screen message in the period), purchasers, ARPU and ARPPU.
unique_key: [grain, period_start, segment]
tags: [recipe, timeseries]
*/
with per_user as (
    select grain, period_start, user_key, revenue, is_purchaser
    from {{ ref('derived_user_periods') }}
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
