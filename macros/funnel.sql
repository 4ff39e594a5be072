{# Mixpanel's ordered two-step funnel (view -> purchase, category held constant) as one sorted scan.

   `views` has columns <parts>, category, user_key, viewed_at (already filtered to what may enter);
   `purchases` has category, user_key, purchased_at. Returns one row per (<parts>, category, user)
   with entered_at, converted_at (null when not converted), first/last_viewed_at and views.

   For every view, a window over the user's time-ordered views and purchases of the category finds
   the next purchase at or after it (views sort before purchases at the same instant, so p = e
   converts). Without re-entry the user enters at their first view; with re-entry
   (var funnel_reentry) any view may be the entry: the first purchase reachable within the window
   of some view converts, and the entry is the latest view at or before that purchase. #}
{% macro funnel_users(views, purchases, parts=[]) -%}
{%- set by = (parts + ['category', 'user_key']) | join(', ') -%}
(
    with stream as (
        select {{ by }}, viewed_at as ts, 0 as kind
        from {{ views }}
        union all
        select {% for p in parts %}null as {{ p }}, {% endfor %}category, user_key, purchased_at as ts,
            1 as kind
        from {{ purchases }}
        where category is not null
    ),

    with_next as (
        select
            {{ by }},
            ts as viewed_at,
            kind,
            min(case when kind = 1 then ts end) over (
                partition by user_key, category order by ts, kind
                rows between current row and unbounded following
            ) as next_purchase_at
        from stream
    ),

    view_rows as (
        select
            {{ by }},
            viewed_at,
            next_purchase_at,
            min(viewed_at) over (partition by {{ by }}) as first_viewed_at,
            min(case when next_purchase_at <= {{ add_days('viewed_at', var('conversion_window_days')) }}
                     then next_purchase_at end) over (partition by {{ by }}) as reachable_purchase_at
        from with_next
        where kind = 0
    ),

    per_user as (
        select
            {{ by }},
            min(viewed_at) as first_viewed_at,
            max(viewed_at) as last_viewed_at,
            count(*) as views,
        {%- if var('funnel_reentry') %}
            coalesce(max(case when viewed_at <= reachable_purchase_at then viewed_at end),
                     min(viewed_at)) as entered_at,
            min(reachable_purchase_at) as converted_at
        {%- else %}
            min(viewed_at) as entered_at,
            min(case when viewed_at = first_viewed_at
                      and next_purchase_at <= {{ add_days('viewed_at', var('conversion_window_days')) }}
                     then next_purchase_at end) as converted_at
        {%- endif %}
        from view_rows
        group by {{ by }}
    )

    select * from per_user
)
{%- endmacro %}
