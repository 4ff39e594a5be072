"""The generated-rows metrics layer (tests/fixtures/metrics_props/): four small tables that
every metric type is defined over, and the day their rows start. The property tests draw rows
for them; the cross-engine tests load one fixed draw into each engine."""

from __future__ import annotations

import datetime as dt

from runner.metrics.query import SemanticLayer

from .project import FIXTURES

TABLES = {
    "p_orders": {"order_id": "varchar", "user_key": "varchar", "ordered_at": "timestamp",
                 "revenue": "double", "currency": "varchar", "is_gift": "boolean"},
    "p_users": {"user_key": "varchar", "segment": "varchar"},
    "p_views": {"view_id": "varchar", "user_key": "varchar", "viewed_at": "timestamp",
                "category": "varchar"},
    "p_lines": {"line_id": "varchar", "order_id": "varchar", "user_key": "varchar",
                "purchased_at": "timestamp", "category": "varchar", "price": "double"},
}
LAYER = SemanticLayer(FIXTURES, list(TABLES), FIXTURES / "metrics_props")
START = dt.datetime(2026, 1, 26)  # a Monday; 50 days cross three month boundaries
