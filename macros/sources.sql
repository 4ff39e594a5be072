{# The raw messages stg_events reads, from either source format of arpu.yml:
   `messages` (raw_events, loaded by `arpu ingest`) or `segment_warehouse` (the tables Segment's
   warehouse destination loads: tracks, identifies, pages, screens and one table per event, with
   snake_case columns and `products` stored as a JSON string). Both give the same columns. #}
{% macro raw_messages() -%}
{%- if source_format == 'segment_warehouse' -%}
{{ warehouse_messages() }}
{%- else -%}
select
    message_id, content_id, load_id, record_number, message_type, event, user_id,
    anonymous_id, event_ts, received_at, sent_at, properties, traits, source_file, line_number
from {{ source('segment', 'raw_events') }}
where {{ recorded_load('load_id') }}
{%- endif -%}
{%- endmacro %}

{# Rows of recorded loads only: `arpu ingest` records a load (raw_loads) once all its rows are
   written, so the rows of an ingest that was killed half-way are never read. #}
{% macro recorded_load(column) -%}
{{ column }} in (select load_id from {{ source('segment', 'raw_loads') }})
{%- endmacro %}

{# A JSON object from (key, SQL expression) pairs; PostgreSQL 15 has no JSON_OBJECT(k: v). #}
{% macro default__json_object_of(pairs) -%}
json_object({{ json_pairs(pairs) }})
{%- endmacro %}

{% macro postgres__json_object_of(pairs) -%}
json_build_object({{ json_pairs(pairs) }})
{%- endmacro %}

{% macro json_pairs(pairs) -%}
{%- for key, value in pairs %}'{{ key }}', {{ value }}{{ ', ' if not loop.last }}{% endfor -%}
{%- endmacro %}

{% macro utc(column) -%}
cast(cast({{ column }} as timestamptz) at time zone 'UTC' as timestamp)
{%- endmacro %}

{# load_id tells the tables apart, record_number orders rows within one (by uuid_ts): together
   they identify a row, as (load, line) do for ingested files. #}
{% macro warehouse_common(kind, alias) -%}
    {{ alias }}.id as message_id,
    cast(null as varchar) as content_id,
    {{ {'track': 1, 'identify': 2, 'page': 3}[kind] }} as load_id,
    row_number() over (order by {{ alias }}.uuid_ts, {{ alias }}.id) as record_number,
    '{{ kind }}' as message_type,
    {{ alias }}.user_id,
    {{ alias }}.anonymous_id,
    {{ utc(alias ~ '."timestamp"') }} as event_ts,
    {{ utc(alias ~ '.received_at') }} as received_at,
    {{ utc(alias ~ '.sent_at') }} as sent_at,
    cast(null as varchar) as source_file,
    cast(null as bigint) as line_number
{%- endmacro %}

{% macro warehouse_messages() -%}
select
    {{ warehouse_common('track', 't') }},
    t.event_text as event,
    coalesce(
        case when oc.id is not null then {{ json_object_of([
            ('order_id', 'oc.order_id'), ('revenue', 'oc.revenue'), ('total', 'oc.total'),
            ('currency', 'oc.currency'), ('products', 'cast(oc.products as json)')]) }} end,
        case when pv.id is not null then {{ json_object_of([
            ('product_id', 'pv.product_id'), ('sku', 'pv.sku'), ('category', 'pv.category'),
            ('name', 'pv.name'), ('price', 'pv.price')]) }} end,
        case when ev.id is not null then {{ json_object_of([
            ('experiment_id', 'ev.experiment_id'), ('experiment_name', 'ev.experiment_name'),
            ('variation_id', 'ev.variation_id'), ('variation_name', 'ev.variation_name')]) }} end
    ) as properties,
    cast(null as json) as traits
from {{ source('segment', 'tracks') }} as t
left join {{ source('segment', 'order_completed') }} as oc on t.id = oc.id
left join {{ source('segment', 'product_viewed') }} as pv on t.id = pv.id
left join {{ source('segment', 'experiment_viewed') }} as ev on t.id = ev.id
union all
select
    {{ warehouse_common('identify', 'i') }},
    cast(null as varchar) as event,
    cast(null as json) as properties,
    {{ json_object_of([('email', 'i.email'), ('phone', 'i.phone')]) }} as traits
from {{ source('segment', 'identifies') }} as i
union all
select {{ warehouse_common('page', 'p') }}, cast(null as varchar) as event,
    cast(null as json) as properties, cast(null as json) as traits
from {{ source('segment', 'pages') }} as p
{%- endmacro %}
