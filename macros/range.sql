{# Time filters from vars: the analysis range [start_date, end_date) and the promotion cut-off. #}
{% macro in_range(column) -%}
{% if var('start_date') %}{{ column }} >= {{ var('start_date') }}{% else %}true{% endif %}
 and {% if var('end_date') %}{{ column }} < {{ var('end_date') }}{% else %}true{% endif %}
{%- endmacro %}

{% macro before_promo(column) -%}
{% if var('promo_start') %}{{ column }} < {{ var('promo_start') }}{% else %}true{% endif %}
{%- endmacro %}

{% macro add_days(column, days) -%}
({{ column }} + interval '{{ days.value | int if days.value is defined else days | int }}' day)
{%- endmacro %}
