{# Mixpanel's ordered two-step funnel (view -> purchase, category held constant) as one sorted scan.

   `views` has columns category, user_key, viewed_at (already filtered to what may enter);
   `purchases` has category, user_key, purchased_at. Returns one row per (category, user), or with
   `by_period` per (grain, period_start, category, user) of the views' periods (by_grain), with
   entered_at, converted_at (null when not converted), first/last_viewed_at and views.

   For every view, a window over the user's time-ordered views and purchases of the category finds
   the next purchase at or after it (views sort before purchases at the same instant, so p = e
   converts). That purchase does not depend on the period (it may fall after it), so it is found
   once per view, before the views are repeated per grain. Without re-entry the user enters at
   their first view, and the first view's next purchase is the least of all their views' (a later
   view's next purchase is never earlier): one aggregate. With re-entry (var funnel_reentry) any
   view may be the entry: the first purchase reachable within the window of some view converts,
   and the entry is the latest view at or before that purchase. #}
{% macro funnel_users(views, purchases, by_period=false) -%}
{%- set by = ((['grain', 'period_start'] if by_period else []) + ['category', 'user_key']) | join(', ') -%}
{%- set window_end = add_days('viewed_at', var('conversion_window_days')) -%}
(
    with stream as (
        select category, user_key, viewed_at as ts, 0 as kind
        from {{ views }}
        union all
        select category, user_key, purchased_at as ts, 1 as kind
        from {{ purchases }}
        where category is not null
    ),

    with_next as (
        select
            category,
            user_key,
            ts as viewed_at,
            kind,
            min(case when kind = 1 then ts end) over (
                partition by user_key, category order by ts, kind
                rows between current row and unbounded following
            ) as next_purchase_at
        from stream
    ),

    view_next as (
        select category, user_key, viewed_at, next_purchase_at
        from with_next
        where kind = 0
    ),
    {%- if by_period %}

    period_views as (
        select * from ({{ by_grain('view_next', 'viewed_at') }}) as g
    ),
    {%- endif %}
    {%- set view_rows = 'period_views' if by_period else 'view_next' %}
    {%- if var('funnel_reentry') %}

    reachable as (
        select
            {{ by }},
            viewed_at,
            min(case when next_purchase_at <= {{ window_end }}
                     then next_purchase_at end) over (partition by {{ by }}) as reachable_purchase_at
        from {{ view_rows }}
    ),

    per_user as (
        select
            {{ by }},
            min(viewed_at) as first_viewed_at,
            max(viewed_at) as last_viewed_at,
            count(*) as views,
            coalesce(max(case when viewed_at <= reachable_purchase_at then viewed_at end),
                     min(viewed_at)) as entered_at,
            min(reachable_purchase_at) as converted_at
        from reachable
        group by {{ by }}
    )
    {%- else %}

    per_user as (
        select
            {{ by }},
            min(viewed_at) as first_viewed_at,
            max(viewed_at) as last_viewed_at,
            count(*) as views,
            min(viewed_at) as entered_at,
            case when min(next_purchase_at) <= {{ add_days('min(viewed_at)', var('conversion_window_days')) }}
                 then min(next_purchase_at) end as converted_at
        from {{ view_rows }}
        group by {{ by }}
    )
    {%- endif %}

    select * from per_user
)
{%- endmacro %}
