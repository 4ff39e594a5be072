/*
description: >
  Mixpanel's default funnel per category (ordered, uniques, category held constant): viewers who
  entered, purchasers who converted within the window, and the median seconds to convert.
unique_key: category
tags: [recipe]
*/
with per_category as (
    select
        category,
        count(*) as viewers,
        count(converted_at) as purchasers,
        {{ median("date_diff('microsecond', entered_at, converted_at) / 1000000.0") }}
            as median_time_to_convert_s
    from {{ ref('derived_funnel_users') }}
    group by category
)

select
    category,
    viewers,
    purchasers,
    {{ safe_div('purchasers', 'viewers') }} as conversion_rate,
    median_time_to_convert_s
from per_category
