/*
description: >
  Per grain, period, category and user who viewed the category in that period (in range): the
  first qualifying purchase within conversion_window_days of their first view of the category in
  the period (null when none; it may fall after the period). What
  category_conversion_timeseries counts per segment; not a SPEC relation.
# delete+insert by user: a user's funnel in a period reads only that user's views and purchases
materialized: incremental
incremental_strategy: delete+insert
unique_key: [grain, period_start, category, user_key]
touched_by: user_key
touched_keys: "{{ changed_users(orders=true) }}"
tags: [funnel, timeseries]
*/
with views as (
    select category, user_key, viewed_at
    from {{ ref('fct_product_views') }}
    where category is not null and {{ in_range('viewed_at') }}
        {{ of_changed_users() }}
),

purchases as (
    select category, user_key, purchased_at
    from {{ ref('fct_product_purchases') }}
    {{ of_changed_users('where') }}
),

funnel as (
    select * from {{ funnel_users('views', 'purchases', by_period=true) }} as f
)

select grain, period_start, category, user_key, converted_at
from funnel
