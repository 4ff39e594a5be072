{# One row per element of a JSON array in `properties`, with its 1-based position.
   Returns a FROM-clause fragment exposing `<alias>.element` (JSON) and `<alias>.position`.
   sqlglot turns UNNEST ... WITH ORDINALITY into each engine's own construct, but not with the
   same base: Spark's POSEXPLODE, BigQuery's WITH OFFSET and Snowflake's FLATTEN count from 0,
   and PostgreSQL needs json_array_elements; so this is written per dialect. #}
{% macro json_array_rows(relation, array_path, alias) -%}
{%- set key = array_path[2:] -%}
{%- if target.dialect == 'postgres' %}
(
    select src.*, e.element, e.position
    from {{ relation }} as src
    cross join lateral json_array_elements(
        case when json_typeof(src.properties -> '{{ key }}') = 'array'
             then src.properties -> '{{ key }}' else cast('[]' as json) end
    ) with ordinality as e(element, position)
) as {{ alias }}
{%- elif target.dialect in ('spark', 'databricks') %}
(
    {#- JSON is text in Spark: the elements are JSON strings, positions count from 0 #}
    select src.*, e.element, e.position + 1 as position
    from {{ relation }} as src
    cross join unnest(cast(json_extract(src.properties, '{{ array_path }}') as varchar[]))
        with ordinality as e(element, position)
) as {{ alias }}
{%- else %}
(
    select src.*, e.element, e.position{{ ' + 1 as position' if target.dialect in ('bigquery', 'snowflake') else '' }}
    from {{ relation }} as src
    cross join unnest(cast(json_extract(src.properties, '{{ array_path }}') as json[]))
        with ordinality as e(element, position)
) as {{ alias }}
{%- endif %}
{%- endmacro %}
