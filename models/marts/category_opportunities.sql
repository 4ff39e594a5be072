/*
description: >
  The recipe's step 2: categories with low conversion (below the median over categories) and a
  high average item price (at or above the median), ranked by revenue at stake =
  (viewers - purchasers) * avg_item_price. Rank 1 is the recommended promotion target unless
  var target_category names one (is_target marks the category the cohort relations use).
unique_key: category
tags: [recipe]
*/
with joined as (
    select
        f.category,
        f.conversion_rate,
        p.avg_item_price,
        f.viewers,
        f.purchasers,
        f.viewers - f.purchasers as non_converted,
        (f.viewers - f.purchasers) * p.avg_item_price as revenue_at_stake,
        p.order_rank
    from {{ ref('category_funnel') }} as f
    left join {{ ref('category_price_stats') }} as p on f.category = p.category
),

medians as (
    select
        {{ median('conversion_rate') }} as median_conversion_rate,
        {{ median('avg_item_price') }} as median_avg_item_price
    from joined
),

flagged as (
    select
        j.*,
        j.conversion_rate < m.median_conversion_rate as low_conversion,
        j.avg_item_price >= m.median_avg_item_price as high_price,
        rank() over (order by j.revenue_at_stake desc nulls last) as rank,
        row_number() over (order by j.revenue_at_stake desc nulls last, j.category) as tiebreak
    from joined as j
    cross join medians as m
)

select
    category,
    conversion_rate,
    avg_item_price,
    viewers,
    purchasers,
    non_converted,
    revenue_at_stake,
    low_conversion,
    high_price,
    rank,
    order_rank,
    {% if var('target_category') -%}
    category = {{ var('target_category') }} as is_target
    {%- else -%}
    tiebreak = 1 as is_target
    {%- endif %}
from flagged
