/*
description: >
  Per (category, user) who viewed the category in range: funnel entry, conversion (first
  qualifying purchase of the category within conversion_window_days) and their views. Derived
  from the marts fct_product_views and fct_product_purchases for category_funnel; not a SPEC
  relation.
unique_key: [category, user_key]
tags: [funnel]
*/
with views as (
    select category, user_key, viewed_at
    from {{ ref('fct_product_views') }}
    where category is not null and {{ in_range('viewed_at') }}
),

purchases as (
    select category, user_key, purchased_at
    from {{ ref('fct_product_purchases') }}
)

select * from {{ funnel_users('views', 'purchases') }} as funnel
