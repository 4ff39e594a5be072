{# Arithmetic that behaves the same on every engine: float division, division by zero as null,
   and the standard normal tail from exp() alone (no engine-specific erf/normal functions). #}
{% macro safe_div(numerator, denominator) -%}
(cast({{ numerator }} as double) / nullif(cast({{ denominator }} as double), 0))
{%- endmacro %}

{# erfc(x) for x >= 0, Numerical Recipes' Chebyshev fit (fractional error below 1.2e-7): with
   t = 1 / (1 + 0.5 * x), erfc(x) = t * exp(-x^2 + P(t)), P a polynomial of degree 9 in t.
   erfc(x, t) reads x and t from columns, so that the compiled SQL holds each once rather than a
   dozen times: erfc_t(x) computes t in an earlier CTE. #}
{% macro erfc_t(x) -%}
1.0 / (1.0 + 0.5 * ({{ x }}))
{%- endmacro %}

{% macro erfc(x, t) -%}
{%- set value -%}
{{ t }} * exp(-{{ x }} * {{ x }} - 1.26551223 + {{ t }} * (1.00002368 + {{ t }} * (0.37409196
 + {{ t }} * (0.09678418 + {{ t }} * (-0.18628806 + {{ t }} * (0.27886807 + {{ t }} * (-1.13520398
 + {{ t }} * (1.48851587 + {{ t }} * (-0.82215223 + {{ t }} * 0.17087277)))))))))
{%- endset -%}
{#- beyond x = 26 erfc is below 1e-290: PostgreSQL's exp() raises an underflow error there
    instead of returning 0; near x = 0 the fit exceeds 1 by 3e-8, and a p-value is at most 1 #}
case when {{ x }} > 26 then 0.0 when {{ value }} > 1.0 then 1.0 else {{ value }} end
{%- endmacro %}

{# The argument of a two-sided p-value of a standard normal statistic z:
   2 * (1 - Phi(|z|)) = erfc(|z| / sqrt(2)). #}
{% macro two_sided_p_x(z) -%}
abs({{ z }}) / sqrt(2.0)
{%- endmacro %}

{# The median, interpolated between the two middle values for an even count (DuckDB's median,
   PostgreSQL's percentile_cont(0.5)). ClickHouse's median() is an estimate from a sample of
   8,192 values; quantileExactInclusive (level 0.5 by default) is the exact one. #}
{% macro default__median(x) -%}
median({{ x }})
{%- endmacro %}

{% macro clickhouse__median(x) -%}
quantileExactInclusive({{ x }})
{%- endmacro %}

{# The sample variance; null for fewer than two values (ClickHouse's varSamp gives nan). #}
{% macro default__var_samp(x) -%}
var_samp({{ x }})
{%- endmacro %}

{% macro clickhouse__var_samp(x) -%}
case when count({{ x }}) > 1 then var_samp({{ x }}) end
{%- endmacro %}
