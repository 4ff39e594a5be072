{# One row per element of a JSON array in `properties`, with its 1-based position.
   Returns a FROM-clause fragment exposing `<alias>.element` (JSON) and `<alias>.position`.
   sqlglot turns UNNEST ... WITH ORDINALITY into each engine's own construct, but not with the
   same base: Spark's POSEXPLODE, BigQuery's WITH OFFSET and Snowflake's FLATTEN count from 0,
   and PostgreSQL needs json_array_elements; so this is a family, one macro per gap. #}
{% macro default__json_array_rows(relation, array_path, alias) %}
(
    select src.*, e.element, e.position
    from {{ relation }} as src
    cross join unnest(cast(json_extract(src.properties, '{{ array_path }}') as json[]))
        with ordinality as e(element, position)
) as {{ alias }}
{%- endmacro %}

{# BigQuery's WITH OFFSET and Snowflake's FLATTEN index count from 0. #}
{% macro bigquery__json_array_rows(relation, array_path, alias) -%}
{{ zero_based_json_array_rows(relation, array_path, alias) }}
{%- endmacro %}

{% macro snowflake__json_array_rows(relation, array_path, alias) -%}
{{ zero_based_json_array_rows(relation, array_path, alias) }}
{%- endmacro %}

{% macro zero_based_json_array_rows(relation, array_path, alias) %}
(
    select src.*, e.element, e.position + 1 as position
    from {{ relation }} as src
    cross join unnest(cast(json_extract(src.properties, '{{ array_path }}') as json[]))
        with ordinality as e(element, position)
) as {{ alias }}
{%- endmacro %}

{% macro postgres__json_array_rows(relation, array_path, alias) -%}
{%- set key = array_path[2:] %}
(
    select src.*, e.element, e.position
    from {{ relation }} as src
    cross join lateral json_array_elements(
        case when json_typeof(src.properties -> '{{ key }}') = 'array'
             then src.properties -> '{{ key }}' else cast('[]' as json) end
    ) with ordinality as e(element, position)
) as {{ alias }}
{%- endmacro %}

{# Redshift has no set-returning JSON function: positions 1..10,000 from digits (ingest's
   default `max_products`), and the element by index. #}
{% macro redshift__json_array_rows(relation, array_path, alias) -%}
{%- set key = array_path[2:] %}
(
    select
        src.*,
        json_extract_array_element_text(json_extract_path_text(src.properties, '{{ key }}'),
                                        n.position - 1) as element,
        n.position
    from {{ relation }} as src
    inner join (
        select thousands.d * 1000 + hundreds.d * 100 + tens.d * 10 + ones.d + 1 as position
        from {{ digits() }} as thousands
        cross join {{ digits() }} as hundreds
        cross join {{ digits() }} as tens
        cross join {{ digits() }} as ones
    ) as n
        on n.position <= json_array_length(json_extract_path_text(src.properties, '{{ key }}'))
) as {{ alias }}
{%- endmacro %}

{# JSON is text in Spark: the elements are JSON strings, positions count from 0. #}
{% macro spark__json_array_rows(relation, array_path, alias) %}
(
    select src.*, e.element, e.position + 1 as position
    from {{ relation }} as src
    cross join unnest(cast(json_extract(src.properties, '{{ array_path }}') as varchar[]))
        with ordinality as e(element, position)
) as {{ alias }}
{%- endmacro %}

{% macro databricks__json_array_rows(relation, array_path, alias) -%}
{{ spark__json_array_rows(relation, array_path, alias) }}
{%- endmacro %}

{# ClickHouse reads JSON held as text: JSONExtractArrayRaw gives the elements' JSON texts (none
   for a missing or non-array value), arrayJoin a row per position (1-based, as its arrays). #}
{% macro clickhouse__json_array_rows(relation, array_path, alias) -%}
{%- set elements = "JSONExtractArrayRaw(coalesce(src.properties, ''), '" ~ array_path[2:] ~ "')" %}
(
    select
        src.*,
        arrayJoin(arrayEnumerate({{ elements }})) as position,
        arrayElement({{ elements }}, position) as element
    from {{ relation }} as src
) as {{ alias }}
{%- endmacro %}


{% macro digits() -%}
(select 0 as d union all select 1 union all select 2 union all select 3 union all select 4
 union all select 5 union all select 6 union all select 7 union all select 8 union all select 9)
{%- endmacro %}
