"""`source.format: segment_warehouse`: the tables Segment's warehouse destination loads give the
same marts as the raw messages they came from (on PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import yaml
from support.built import Built
from support.compare import SPEC_KEYS, assert_same_across_engines, relations
from support.project import POSTGRES_DSN, ProjectHarness

from runner.context import Context

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PG = POSTGRES_DSN
COMMON = """message_id as id, anonymous_id, user_id, event_ts as "timestamp",
    original_ts as original_timestamp, received_at, sent_at, loaded_at as uuid_ts,
    json_extract_string(context, '$.library.name') as context_library_name"""
# The shape of Segment's warehouse tables, made from the raw messages (DuckDB SQL).
TABLES = {
    "tracks": f"""select {COMMON}, lower(replace(event, ' ', '_')) as event, event as event_text
        from raw_events where message_type = 'track'""",
    "order_completed": f"""select {COMMON}, event as event_text,
        json_extract_string(properties, '$.order_id') as order_id,
        json_extract_string(properties, '$.revenue') as revenue,
        json_extract_string(properties, '$.total') as total,
        json_extract_string(properties, '$.currency') as currency,
        json_extract(properties, '$.products')::varchar as products
        from raw_events where event = 'Order Completed'""",
    "product_viewed": f"""select {COMMON}, event as event_text,
        json_extract_string(properties, '$.product_id') as product_id,
        json_extract_string(properties, '$.sku') as sku,
        json_extract_string(properties, '$.category') as category,
        json_extract_string(properties, '$.name') as name,
        json_extract_string(properties, '$.price') as price
        from raw_events where event = 'Product Viewed'""",
    "experiment_viewed": f"""select {COMMON}, event as event_text,
        json_extract_string(properties, '$.experiment_id') as experiment_id,
        json_extract_string(properties, '$.experiment_name') as experiment_name,
        json_extract_string(properties, '$.variation_id') as variation_id,
        json_extract_string(properties, '$.variation_name') as variation_name
        from raw_events where event = 'Experiment Viewed'""",
    "identifies": f"""select {COMMON}, json_extract_string(traits, '$.email') as email,
        json_extract_string(traits, '$.phone') as phone
        from raw_events where message_type = 'identify'""",
    "pages": f"select {COMMON} from raw_events where message_type = 'page'",
}


def _load_warehouse_tables(messages: ProjectHarness, schema: str) -> None:
    with Context(messages.root) as ctx, psycopg.connect(PG, autocommit=True) as pg:
        con = ctx.engine().con  # type: ignore[attr-defined]
        pg.execute(f'create schema "{schema}"')
        for table, sql in TABLES.items():
            cur = con.execute(sql)
            columns = [d[0] for d in cur.description]
            types = ["timestamptz" if c in ("timestamp", "original_timestamp", "received_at",
                                            "sent_at", "uuid_ts") else "text" for c in columns]
            pg.execute(f'create table "{schema}"."{table}" ('
                       + ", ".join(f'"{c}" {t}' for c, t in zip(columns, types, strict=True))
                       + ")")
            with pg.cursor().copy(f'copy "{schema}"."{table}" from stdin') as copy:
                for row in cur.fetchall():
                    copy.write_row(row)


def test_warehouse_tables_give_the_same_marts(sample_built_by_context: Built,
                                              tmp_path: Path) -> None:
    assert sample_built_by_context.outcome.success
    messages = sample_built_by_context.copy(tmp_path / "messages")
    segment_schema, arpu_schema = f"segment_{os.getpid()}", f"arpu_test_wh_{os.getpid()}"
    warehouse = ProjectHarness(tmp_path / "warehouse")
    config = yaml.safe_load((warehouse.root / "arpu.yml").read_text())
    config["source"] = {"format": "segment_warehouse", "schema": segment_schema}
    config["targets"]["postgres"]["schema"] = arpu_schema
    (warehouse.root / "arpu.yml").write_text(yaml.safe_dump(config))
    try:
        _load_warehouse_tables(messages, segment_schema)
        with Context(warehouse.root, target="postgres") as ctx:
            result = ctx.build()
        assert result.success, "\n".join(f"{r.model}: {r.error}" for r in result.results if r.error)
        expected = relations(messages, "duckdb")
        actual = relations(warehouse, "postgres")
        assert actual["rejected_events"] == []
        # stg_events differs only in bookkeeping (file, line, load) and is checked via the marts
        marts = set(SPEC_KEYS) - {"rejected_events", "stg_events"}
        assert_same_across_engines({k: expected[k] for k in marts},
                                   {k: actual[k] for k in marts}, "segment_warehouse", only=marts)
    finally:
        with psycopg.connect(PG, autocommit=True) as pg:
            pg.execute(f'drop schema if exists "{segment_schema}" cascade')
            pg.execute(f'drop schema if exists "{arpu_schema}" cascade')
            pg.execute(f'drop schema if exists "{arpu_schema}__work" cascade')
