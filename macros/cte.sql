{# DuckDB and PostgreSQL materialize a CTE that is read more than once. That is right for a small
   result and wrong for a scan of the raw events, which is cheaper to read twice than to hold in
   memory: at 10M events under a 4 GB memory limit, stg_events spilled and ran 3.9 times as long
   as at 5M. Other engines inline CTEs and do not know the hint. #}
{% macro default__not_materialized() -%}
{%- endmacro %}

{% macro duckdb__not_materialized() -%}
not materialized
{%- endmacro %}

{% macro postgres__not_materialized() -%}
not materialized
{%- endmacro %}
