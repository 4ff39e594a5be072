{# Reading Segment's JSON payloads: strings, numbers that may arrive as numeric strings. #}
{% macro json_str(column, path) -%}
json_extract_string({{ column }}, '{{ path }}')
{%- endmacro %}

{% macro json_num(column, path) -%}
try_cast(trim(json_extract_string({{ column }}, '{{ path }}')) as double)
{%- endmacro %}
