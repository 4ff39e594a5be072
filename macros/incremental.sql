{# What changed since the watermark of the delete+insert model being rendered: its
   `touched_keys` and the rows its increment recomputes. stg_events marks the messages it
   rewrote (updated_load); int_event_users keeps the user_key they had before, and int_orders
   the user of the orders it rewrote (previous_user_key). A key counts as touched both where a
   changed row is now and where it was: a message re-decided or re-stitched to another user, or
   an order whose earliest copy is now another user's, changes the old user's rows too. #}
{% macro changed_events() -%}
select event_id from {{ ref('stg_events') }} where updated_load > {{ watermark() }}
{%- endmacro %}

{# An order's key in int_orders: its order_id, else the message's event_id. #}
{% macro order_key(properties='properties', event_id='event_id') -%}
coalesce({{ json_str(properties, '$.order_id') }}, {{ event_id }})
{%- endmacro %}

{# int_orders' touched orders: those a changed message carries now, and those whose kept copy
   changed (its order may now be another message's, or no message's). #}
{% macro int_orders_touched(this) -%}
select order_id from {{ this }} where event_id in ({{ changed_events() }})
union
select {{ order_key() }} as order_id
from {{ ref('stg_events') }}
where updated_load > {{ watermark() }}
    and message_type = 'track' and event_name = 'Order Completed'
{%- endmacro %}

{# The touched orders of a relation keyed by order that keeps the order's event_id
   (fct_orders, fct_product_purchases): the orders int_orders rewrote, and those whose message
   changed (an order no message carries any more is only deleted). #}
{% macro touched_orders(this) -%}
select order_id from {{ ref('int_orders') }} where updated_load > {{ watermark() }}
union
select order_id from {{ this }} where event_id in ({{ changed_events() }})
{%- endmacro %}

{# Users whose messages changed, now and before; with `orders`, also the users an order moved
   between (its purchased lines count for the user of its earliest copy). #}
{% macro changed_users(orders=false) -%}
{%- set relations = [ref('int_event_users')] + ([ref('int_orders')] if orders else []) -%}
{%- for relation in relations %}
select user_key from {{ relation }} where updated_load > {{ watermark() }}
union
select previous_user_key as user_key from {{ relation }}
where updated_load > {{ watermark() }} and previous_user_key is not null
{{- ' union' if not loop.last }}
{%- endfor %}
{%- endmacro %}

{# In an increment, `<keyword> user_key in (<changed_users>)`: a per-user model reads only the
   users the new loads touched; built whole, nothing. #}
{% macro of_changed_users(keyword='and', orders=true) -%}
{%- if is_incremental() %}
{{ keyword }} user_key in ({{ changed_users(orders=orders) }})
{%- endif %}
{%- endmacro %}
