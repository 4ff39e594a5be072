/*
description: >
  The recipe's main metric #2 over time (Mixpanel's funnel line chart): per grain, period,
  segment and category, the users whose first view of the category within the period converted
  within the window (the purchase may fall after the period).
unique_key: [grain, period_start, segment, category]
tags: [recipe, timeseries]
*/
with views as (
    select category, user_key, viewed_at
    from {{ ref('fct_product_views') }}
    where category is not null and {{ in_range('viewed_at') }}
),

purchases as (
    select category, user_key, purchased_at
    from {{ ref('fct_product_purchases') }}
),

funnel as (
    select * from {{ funnel_users('views', 'purchases', by_period=true) }} as f
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
