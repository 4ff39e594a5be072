"""How DuckDB classifies a chunk of lines, in bulk: each line is parsed twice in C, once for its
keys (a repeated one matters) and once for its fields (`from_json`: strings as text, objects as
JSON), its properties once more; fields are checked and typed from there, nothing parsed again
for a clean message. A line gets a reason (rejected) or none (loaded), and flags for the few a
Python check must read first (runner/ingest/strict.py)."""

from __future__ import annotations

import json
import string

from runner.ingest.strict import MAX_DEPTH

# price, quantity, revenue and total above this are rejected: a billion orders of the largest
# stay far from a double's overflow (a sum that overflows is infinity, which fails the build)
MAX_NUMBER = 1e15

CHECK_MACROS = r"""
-- a line as kept, without its line end (a CRLF file's lines end in CR): for the few lines whose
-- text is stored (rejected) or hashed (no messageId)
create or replace temp macro _line_text(raw) as (rtrim(raw, chr(13) || chr(10)));
-- `s` without leading and trailing WHITESPACE (DuckDB's E'' strings know no \v)
create or replace temp macro _trim_ws(s) as (trim(s, E' \t\n\r\f' || chr(11)));
-- SPEC's "missing": an empty or whitespace-only string is null. Most values start with a
-- visible character and are not trimmed; `s` should be a column (a macro repeats its argument).
create or replace temp macro _given(s) as (
    case when ascii(s) > 32 then s when _trim_ws(s) <> '' then s end
);
-- a number-valued field must be missing (absent, null, or a string that is empty or only
-- whitespace: SPEC section 1), or a number or numeric string in [0, $max_number]; the first
-- test of each kind is the common case, a number within it
create or replace temp macro _num_problem(v) as (
    case
        -- the text of a number within bounds: a JSON string is quoted, NaN and inf are out
        when try_cast(v::varchar as double) between 0 and $max_number then null
        when v is null or json_type(v) = 'NULL' then null
        when json_type(v) in ('BIGINT', 'UBIGINT', 'DOUBLE') then
            case when v::double between 0 and $max_number then null
                 when not isfinite(v::double) then 'is not a finite number'
                 when v::double < 0 then 'is negative'
                 else 'is larger than $max_number_text' end
        when json_type(v) = 'VARCHAR' then
            case when _given(v ->> '$') is null then null  -- missing, like null
                 when not regexp_full_match(_trim_ws(v ->> '$'),
                                            '[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?')
                      then 'is not a number'
                 when try_cast(_trim_ws(v ->> '$') as double) between 0 and $max_number then null
                 when not isfinite(try_cast(_trim_ws(v ->> '$') as double)) then 'is not a number'
                 when try_cast(_trim_ws(v ->> '$') as double) < 0 then 'is negative'
                 else 'is larger than $max_number_text' end
        else 'is not a number'
    end
);
-- ISO 8601 date or date-time with an optional offset; anything looser is not a time. A value
-- with whitespace around it is trimmed (rarely needed: trimming a set of characters is slow)
create or replace temp macro _iso_ts(v) as (
    case when regexp_full_match(v, '\d{4}-\d{2}-\d{2}'
        || '([Tt ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d([.,]\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?)?')
    then case when regexp_matches(v, '[tz,]')
                  then try_cast(replace(upper(v), ',', '.') as timestamptz) at time zone 'UTC'
              -- UTC as written (Segment's own form): no time zone to convert from
              when ends_with(v, 'Z') then try_cast(v as timestamp)
              else try_cast(v as timestamptz) at time zone 'UTC' end
    end
);
-- Segment's own form (UTC, `T` and `Z` upper case, a dot before the fraction) is a subset of
-- `_iso_ts`'s pattern that `_iso_ts` casts as it is: one simpler match spares its alternations
-- and lower-case test for nearly every value (a fifth of a chunk's classification)
create or replace temp macro _ts(v) as (
    case when regexp_full_match(v, '\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?Z')
              then try_cast(v as timestamp)
         when ascii(v) > 32 and ascii(right(v, 1)) > 32 then _iso_ts(v)
         else _iso_ts(_trim_ws(v)) end
);
-- whether a list of an object's keys names one twice; a short list (any real object) compares
-- positions, which is cheaper than hashing
create or replace temp macro _repeats_a_key(keys) as (
    case when len(keys) <= 64
         then list_bool_or(list_transform(keys, lambda k, i: list_position(keys, k) <> i))
         else len(keys) <> list_unique(keys) end
);
"""


# Classifies the chunk's lines into `$table`: typed columns, a reason for a rejected line, and
# `recheck` for a line Python must read first (`_canonical`): one that repeats a key where
# ingest reads (DuckDB's JSON functions take a repeated key's first value, JSON readers the
# last), or whose `products` is a string. `$source` is a CTE `texts` giving each line's kept
# `raw` text and the `text` parsed.
CLASSIFY = r"""
create or replace temp table $table as
with $source, valid as (
    -- a valid JSON text that starts with '{' is an object: no second parse to find out
    select *, keys is not null as is_json,
        -- a case, not an `or`: DuckDB evaluates both sides of an `or` on every line
        case when starts_with(text, '{') then true else starts_with(ltrim(text), '{') end
            as is_object,
        -- \u0000 escaped by an odd number of backslashes: a NUL, which PostgreSQL's text
        -- cannot hold (its json type stores it, and fails every model that reads the line);
        -- `text`: a `products` string read as an array may hold one. A case, not an `and`:
        -- DuckDB would run the regular expression on every line
        case when contains(text, '\u0000')
             then regexp_matches(text, '(^|[^\\])(\\\\)*\\u0000') else false end as has_nul
    from (
        -- the message's keys (a repeated one matters); the parse that finds them also tells
        -- valid JSON (an error, caught) from not
        select *, try(json_keys(text)) as keys from texts
    )
), fields as (
    -- the one parse that reads the fields: strings as text, objects as JSON (null as SQL null)
    select *, case when is_json and is_object then from_json(text, '$message_shape') end as m
    from valid
), vals as (
    select file_index, line_number, record_number, raw, forced_reason, is_json, is_object,
        has_nul,
        m.type as type_text, m.event as event_text, m.messageId as message_id_text,
        m.userId as user_id_text, m.anonymousId as anonymous_id_text,
        m.timestamp as ts_text, m.originalTimestamp as ots_text, m.receivedAt as rat_text,
        m.sentAt as sat_text,
        -- a JSON null is kept as such, as an absent key is not
        case when m.properties is not null then m.properties
             when list_contains(keys, 'properties') then 'null'::json end as properties,
        case when m.traits is not null then m.traits
             when list_contains(keys, 'traits') then 'null'::json end as traits,
        case when m.context is not null then m.context
             when list_contains(keys, 'context') then 'null'::json end as context,
        case when starts_with(m.properties, '{')
             then from_json(m.properties, '$properties_shape') end as p,
        keys as top_keys,
        case when starts_with(m.properties, '{') then json_keys(m.properties) end
            as property_keys,
        case when starts_with(m.traits, '{') then json_keys(m.traits) end as trait_keys
    from fields
), nums as (
    select * exclude (p),
        _num_problem(p.price) as price_problem, _num_problem(p.quantity) as quantity_problem,
        _num_problem(p.revenue) as revenue_problem, _num_problem(p.total) as total_problem,
        p.products as products
    from vals
), present as (
    select *,
        _given(type_text) as message_type, _given(event_text) as event,
        _given(message_id_text) as message_id, _given(user_id_text) as user_id,
        _given(anonymous_id_text) as anonymous_id,
        _given(ts_text) as ts_raw, _given(ots_text) as ots_raw, _given(rat_text) as rat_raw,
        _given(sat_text) as sat_raw
    from nums
), checked as (
    select *,
        coalesce(ts_raw, ots_raw, rat_raw) as time_raw,
        _ts(coalesce(ts_raw, ots_raw, rat_raw)) as event_ts,
        case when products is null or products = 'null' then null
             when starts_with(products, '"')
                 then 'properties.products is a string that does not hold a JSON array'
             when not starts_with(products, '[') then 'properties.products is not an array'
             -- json_extract re-serialises minified, numbers as written: a clean number starts
             -- with a digit, has no exponent and fewer integer digits than max_number (so it
             -- is finite and within the bound), or is null; only other arrays need the
             -- element-by-element check
             when not regexp_matches(products,
                 '"(price|quantity|revenue|total)":([^0-9n]|[0-9.]*[eE]|[0-9]{$number_digits})')
                 then null
             else list_filter(list_transform(json_extract(products, '$[*]'), lambda p, i: coalesce(
                 'properties.products[' || (i - 1) || '].price ' || _num_problem(p -> '$.price'),
                 'properties.products[' || (i - 1) || '].quantity '
                     || _num_problem(p -> '$.quantity'),
                 'properties.products[' || (i - 1) || '].revenue '
                     || _num_problem(p -> '$.revenue'),
                 'properties.products[' || (i - 1) || '].total ' || _num_problem(p -> '$.total'))
             ), lambda x: x is not null)[1]
        end as product_problem,
        case when not is_json or not is_object or forced_reason is not null
                 then false  -- rejected before keys matter
             when starts_with(products, '"') then true
             when _repeats_a_key(top_keys) then true
             when _repeats_a_key(property_keys) then true
             when _repeats_a_key(trait_keys) then true
             when starts_with(products, '[') then coalesce(list_bool_or(list_transform(
                 json_keys(products, '$[*]'), lambda ks: _repeats_a_key(ks))), false)
             else false
        end as recheck
    from present
), classified as (
select file_index, line_number, record_number, raw, message_type, event, message_id, user_id,
    anonymous_id,
    event_ts, _ts(rat_raw) as received_at, _ts(sat_raw) as sent_at, _ts(ots_raw) as original_ts,
    properties, traits, context,
    -- messages without a messageId are identified by their exact text
    case when message_id is null then 'md5:' || md5(_line_text(raw)) end as content_id,
    case
        when forced_reason is not null then forced_reason
        when not is_json then 'not valid JSON'
        when not is_object then 'not a JSON object'
        when has_nul then '$nul_reason'
        when time_raw is null then 'no event time (timestamp, originalTimestamp, receivedAt)'
        when event_ts is null then 'invalid event time: ' || left(time_raw, 64)
        when user_id is null and anonymous_id is null then 'neither userId nor anonymousId'
        when properties is not null and properties <> 'null' and not starts_with(properties, '{')
            then 'properties is not an object'
        when price_problem is not null then 'properties.price ' || price_problem
        when quantity_problem is not null then 'properties.quantity ' || quantity_problem
        when revenue_problem is not null then 'properties.revenue ' || revenue_problem
        when total_problem is not null then 'properties.total ' || total_problem
        when products is not null and starts_with(products, '[')
             and json_array_length(products) > $max_products
            then 'properties.products has more than $max_products_text items'
        when product_problem is not null then product_problem
    end as reason,
    recheck,
    -- may nest deeper than MAX_DEPTH: it has that many brackets (and twice as many bytes, a
    -- test that spares counting in most lines); Python tells (`_too_deep`)
    case when forced_reason is null and strlen(raw) > 2 * $max_depth
         then strlen(raw) - strlen(replace(replace(raw, '{', ''), '[', '')) > $max_depth
         else false end as deep,
    -- DuckDB's JSON reader accepts NaN, Infinity and trailing commas; RFC 8259 does not.
    is_json and (contains(raw, 'NaN') or contains(raw, 'Infinity')
                 or regexp_matches(raw, ',\s*[\]}]')) as suspicious
from checked
)
-- a line's text is kept where it is stored or read again, not for every loaded message
select * replace (case when reason is not null or recheck or deep or suspicious then raw end as raw)
from classified
"""


# The lines of a chunk as Python read them; blank lines are skipped. `file_index`: which of the
# chunk's files a line is from (several small files are classified as one chunk: Loader)
CHUNK_SOURCE = r"""texts as (
    select file_index, line_number, record_number, raw,
        cast(forced_reason as varchar) as forced_reason,  -- all None: NumPy gives no type
        raw as text
    from _chunk
    where case when starts_with(raw, '{') then true else _trim_ws(raw) <> '' end  -- not `or`
)"""


# The lines of a clean chunk (`_clean_columns`): each as read, with its line end (JSON's
# whitespace); blank lines are skipped.
LINES_SOURCE = r"""texts as (
    select file_index, line_number, line_number - 1 as record_number, raw,
        null::varchar as forced_reason, raw as text
    from _chunk
    where case when starts_with(raw, '{') then true else _trim_ws(raw) <> '' end  -- not `or`
)"""


# Lines `_canonical` rewrote: the rewritten text is parsed, the line as read is kept.
RECHECK_SOURCE = r"""texts as (
    select file_index, line_number, record_number, raw,
        cast(forced_reason as varchar) as forced_reason, canonical as text
    from _recheck
)"""


NUL_REASON = "holds \\u0000 (NUL), which PostgreSQL cannot store as text"

# The fields ingest reads, as `from_json` shapes: a message's, and its properties' numbers
MESSAGE_SHAPE = json.dumps({
    **dict.fromkeys(["type", "event", "messageId", "userId", "anonymousId", "timestamp",
                     "originalTimestamp", "receivedAt", "sentAt"], "VARCHAR"),
    **dict.fromkeys(["properties", "traits", "context"], "JSON")})
PROPERTIES_SHAPE = json.dumps(dict.fromkeys(["price", "quantity", "revenue", "total", "products"],
                                            "JSON"))


def _classify_sql(table: str, source: str, max_products: int, max_number: float) -> str:
    return string.Template(CLASSIFY).safe_substitute(
        table=table, source=source, message_shape=MESSAGE_SHAPE,
        properties_shape=PROPERTIES_SHAPE, max_products=int(max_products),
        max_products_text=f"{max_products:,}", max_depth=MAX_DEPTH, nul_reason=NUL_REASON,
        # a number written with fewer integer digits than max_number (no exponent) is below it
        number_digits=min(len(str(int(max_number))), 300))


def _check_macros(max_number: float) -> str:
    return string.Template(CHECK_MACROS).safe_substitute(
        max_number=repr(float(max_number)), max_number_text=number_text(max_number))


def number_text(value: float) -> str:
    """1e15 as `1e15`, 2500 as `2500`, 1234567 as `1234567`: how a bound reads in a reason."""
    short = f"{value:g}"
    text = short if float(short) == value else repr(float(value))
    return text.replace("e+", "e").removesuffix(".0")
