/*
description: >
  The recipe's step 3: per category, the users who viewed it and did not convert. When var
  promo_start is set, only events before it count (views and purchases), so the cohort is fixed
  before the promotion; otherwise it is the funnel's non-converted users over the range.
# delete+insert by user, as derived_funnel_users; a user's email and phone (dim_users) change
# only with their own messages, so with the same users
materialized: incremental
incremental_strategy: delete+insert
unique_key: [category, user_key]
touched_by: user_key
touched_keys: "{{ changed_users(orders=true) }}"
tags: [recipe, cohort]
*/
with views as (
    select category, user_key, viewed_at
    from {{ ref('fct_product_views') }}
    where category is not null and {{ in_range('viewed_at') }} and {{ before_promo('viewed_at') }}
        {{ of_changed_users() }}
),

purchases as (
    select category, user_key, purchased_at
    from {{ ref('fct_product_purchases') }}
    where {{ before_promo('purchased_at') }}
        {{ of_changed_users() }}
),

non_converted as (
    select * from {{ funnel_users('views', 'purchases') }} as funnel
    where converted_at is null
)

select
    n.category,
    n.user_key,
    n.first_viewed_at,
    n.last_viewed_at,
    n.views,
    u.email,
    u.phone
from non_converted as n
left join {{ ref('dim_users') }} as u on n.user_key = u.user_key
