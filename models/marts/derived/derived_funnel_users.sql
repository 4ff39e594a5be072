/*
description: >
  Per (category, user) who viewed the category in range: funnel entry, conversion (first
  qualifying purchase of the category within conversion_window_days) and their views. Derived
  from the marts fct_product_views and fct_product_purchases for category_funnel; not a SPEC
  relation.
# delete+insert by user: a (category, user)'s funnel reads only that user's views and purchases
# of the category, so a build recomputes the users whose views or purchased lines changed
materialized: incremental
incremental_strategy: delete+insert
unique_key: [category, user_key]
touched_by: user_key
touched_keys: "{{ changed_users(orders=true) }}"
tags: [funnel]
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
)

select * from {{ funnel_users('views', 'purchases') }} as funnel
