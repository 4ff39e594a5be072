/*
description: >
  The recipe's main metric #2 over time (Mixpanel's funnel line chart): per grain, period,
  segment and category, the users whose first view of the category within the period converted
  within the window (the purchase may fall after the period).
unique_key: [grain, period_start, segment, category]
tags: [recipe, timeseries]
*/
with funnel as (
    select grain, period_start, category, user_key, converted_at
    from {{ ref('derived_funnel_periods') }}
),

segmented as (
    {{ segment_rows('funnel') }}
),

per_segment as (
    select
        grain,
        period_start,
        segment,
        category,
        count(*) as viewers,
        count(converted_at) as purchasers
    from segmented
    group by grain, period_start, segment, category
)

select
    grain,
    period_start,
    segment,
    category,
    viewers,
    purchasers,
    {{ safe_div('purchasers', 'viewers') }} as conversion_rate
from per_segment
