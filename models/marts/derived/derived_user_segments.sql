/*
description: >
  Segment membership for the over-time relations: every user_key with a message, flagged when in
  the cohort of the target category (var target_category, else the recommended category).
  Derived from the marts dim_users, cohort_non_converted and category_opportunities for
  arpu_timeseries and category_conversion_timeseries; not a SPEC relation.
unique_key: user_key
tags: [cohort]
*/
with target as (
    select category
    from {{ ref('category_opportunities') }}
    where is_target
),

{%- if var('target_category') %}
chosen as (
    select {{ var('target_category') }} as category
),
{%- else %}
chosen as (
    select category from target
),
{%- endif %}

cohort as (
    select distinct c.user_key
    from {{ ref('cohort_non_converted') }} as c
    inner join chosen on c.category = chosen.category
)

select
    u.user_key,
    cohort.user_key is not null as is_cohort
from {{ ref('dim_users') }} as u
left join cohort on u.user_key = cohort.user_key
