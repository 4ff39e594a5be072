{# Reading Segment's JSON payloads: strings, numbers that may arrive as numeric strings.
   A string that is empty or only whitespace is missing (SPEC section 1), like an absent or null
   one: json_str gives null for it, and keeps every other string exactly as it is; json_num
   gives null for it (a price "" is no price, a quantity "" defaults to 1, a revenue "" falls
   back to total). #}
{% macro default__json_str(column, path) -%}
{%- set value = "json_extract_string(" ~ column ~ ", '" ~ path ~ "')" -%}
case when trim({{ value }}, {{ whitespace() }}) <> '' then {{ value }} end
{%- endmacro %}

{# Spark evaluates a CASE's THEN apart from its WHEN, so the default parses the JSON text twice
   (a third of fct_product_views' time). Here it is read once: the whole string when it holds a
   character that is not whitespace (Java's \S is exactly not one of whitespace()'s six), else
   '' and so null. #}
{% macro spark__json_str(column, path) -%}
nullif(regexp_extract(json_extract_string({{ column }}, '{{ path }}'), '(?s)^.*\S.*$', 0), '')
{%- endmacro %}

{% macro default__json_num(column, path) -%}
try_cast(nullif(trim(json_extract_string({{ column }}, '{{ path }}'), {{ whitespace() }}), '')
         as double)
{%- endmacro %}

{# ClickHouse: sqlglot writes try_cast as a cast to Nullable(Float64); toFloat64OrNull says
   "null when not a number" in so many words, a blank string included. (json_str needs nothing:
   ClickHouse reads a missing or null value as '', which json_str turns into null like every
   blank string.) #}
{% macro clickhouse__json_num(column, path) -%}
toFloat64OrNull(trim(json_extract_string({{ column }}, '{{ path }}'), {{ whitespace() }}))
{%- endmacro %}

{# The characters a blank string is made of: space, tab, LF, VT, FF, CR (as chr() codes, which
   every engine reads alike; escapes in string literals differ). #}
{% macro whitespace() -%}
(' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13))
{%- endmacro %}
