{# One row per element of a JSON array column, with its 1-based position.
   Returns a FROM-clause fragment exposing `<alias>.element` (JSON) and `<alias>.position`. #}
{% macro json_array_rows(relation, array_path, alias) -%}
(
    select src.*, unnest(elements) as element, unnest(range(1, len(elements) + 1)) as position
    from (
        select r.*, json_extract(r.properties, '{{ array_path }}[*]') as elements
        from {{ relation }} as r
    ) as src
) as {{ alias }}
{%- endmacro %}
