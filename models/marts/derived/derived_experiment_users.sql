/*
description: >
  Per experiment, variant and user exposed to it in range: whether the user saw only this
  variant of the experiment (is_included), their first exposure to the experiment, and for an
  included user the revenue and whether they ordered from exposure to exposure +
  experiment_window_days inclusive (revenue 0 for a non-buyer). What experiment_results reads;
  not a SPEC relation.
# delete+insert by user: a user's exposures and outcome read only that user's messages and orders
materialized: incremental
incremental_strategy: delete+insert
unique_key: [experiment, variant, user_key]
touched_by: user_key
touched_keys: "{{ changed_users(orders=true) }}"
tags: [experiment]
*/
with exposure_events as (
    select
        user_key,
        event_ts,
        case when event_name = 'Experiment Viewed'
             then coalesce({{ json_str('properties', '$.experiment_id') }},
                           {{ json_str('properties', '$.experiment_name') }})
             else {{ json_str('properties', '$."Experiment name"') }}
        end as experiment,
        case when event_name = 'Experiment Viewed'
             then coalesce({{ json_str('properties', '$.variation_id') }},
                           {{ json_str('properties', '$.variation_name') }})
             else {{ json_str('properties', '$."Variant name"') }}
        end as variant
    from {{ ref('stg_events') }}
    where message_type = 'track'
        and event_name in ('Experiment Viewed', '$experiment_started')
        and {{ in_range('event_ts') }}
        {{ of_changed_users() }}
),

exposures as (
    select * from exposure_events where experiment is not null and variant is not null
),

per_user as (
    select
        experiment,
        user_key,
        count(distinct variant) as variants_seen,
        min(event_ts) as exposed_at
    from exposures
    group by experiment, user_key
),

seen as (
    select distinct experiment, variant, user_key from exposures
),

outcomes as (
    select
        u.experiment,
        u.user_key,
        coalesce(sum(o.revenue), 0) as revenue,
        case when count(o.order_id) > 0 then 1 else 0 end as purchased
    from per_user as u
    left join {{ ref('fct_orders') }} as o
        on o.user_key = u.user_key
        and o.ordered_at >= u.exposed_at
        and o.ordered_at <= {{ add_days('u.exposed_at', var('experiment_window_days')) }}
    where u.variants_seen = 1
    group by u.experiment, u.user_key
)

select
    s.experiment,
    s.variant,
    s.user_key,
    u.variants_seen = 1 as is_included,
    u.exposed_at,
    o.revenue,
    o.purchased
from seen as s
inner join per_user as u on s.experiment = u.experiment and s.user_key = u.user_key
left join outcomes as o on s.experiment = o.experiment and s.user_key = o.user_key
