/*
description: >
  What `arpu dashboard` shows besides the SPEC's relations, at two grains told apart by scope.
  scope 'data': one row for the whole of stg_events (messages, first and last event time) and the
  currency most orders are in (ties: the first by name); its category is '' (a category is never
  empty: an empty text is missing). scope 'cohort': one row per category of cohort_non_converted
  and the number of users in its cohort.
unique_key: [scope, category]
tags: [board]
*/
with span as (
    select
        count(*) as events,
        min(event_ts) as first_event_at,
        max(event_ts) as last_event_at
    from {{ ref('stg_events') }}
),

currencies as (
    select
        currency,
        row_number() over (order by count(*) desc, currency) as currency_rank
    from {{ ref('fct_orders') }}
    where currency is not null
    group by currency
),

main_currency as (
    -- one row, null when no order has a currency
    select max(currency) as currency
    from currencies
    where currency_rank = 1
),

cohort_sizes as (
    -- one row per (category, user_key) in cohort_non_converted
    select category, count(*) as cohort_users
    from {{ ref('cohort_non_converted') }}
    group by category
),

summary as (
    select
        'data' as scope,
        '' as category,
        s.events,
        s.first_event_at,
        s.last_event_at,
        c.currency as main_currency,
        cast(null as bigint) as cohort_users
    from span as s
    cross join main_currency as c

    union all

    select
        'cohort' as scope,
        category,
        cast(null as bigint) as events,
        cast(null as timestamp) as first_event_at,
        cast(null as timestamp) as last_event_at,
        cast(null as varchar) as main_currency,
        cohort_users
    from cohort_sizes
)

select * from summary
