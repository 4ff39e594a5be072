{# The three grains of the over-time relations; weeks are ISO weeks starting on Monday. #}
{% macro default__period_start(grain, column) -%}
cast(date_trunc('{{ grain }}', {{ column }}) as date)
{%- endmacro %}

{# BigQuery's WEEK starts on Sunday; ISOWEEK is its Monday week. Every other target's
   'week' already starts on Monday. #}
{% macro bigquery__period_start(grain, column) -%}
{%- if grain == 'week' -%}
cast(date_trunc('isoweek', {{ column }}) as date)
{%- else -%}
{{ default__period_start(grain, column) }}
{%- endif -%}
{%- endmacro %}

{# Rows of `relation` once per grain, with `grain` and `period_start` of `column`. #}
{% macro by_grain(relation, column) -%}
{%- for grain in ['day', 'week', 'month'] %}
select '{{ grain }}' as grain, {{ period_start(grain, column) }} as period_start, r.*
from {{ relation }} as r
{% if not loop.last %}union all{% endif %}
{%- endfor %}
{%- endmacro %}

{# The segments all / cohort / non_cohort of a per-user relation, from derived_user_segments. #}
{% macro segment_rows(relation) -%}
select 'all' as segment, r.* from {{ relation }} as r
union all
select case when s.is_cohort then 'cohort' else 'non_cohort' end as segment, r.*
from {{ relation }} as r
inner join {{ ref('derived_user_segments') }} as s on r.user_key = s.user_key
{%- endmacro %}
