"""The comparator every equality test relies on can fail: a test that compares relations is
only as strict as it."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from support.compare import assert_same, content, same


def test_same_is_exact_for_counts_and_times_and_close_for_money() -> None:
    assert same(3, 3) and not same(3, 4)
    assert same(decimal.Decimal("0.1") * 3, 0.3) and not same(0.3, 0.3001)
    assert same(dt.datetime(2026, 3, 1, 4, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                dt.datetime(2026, 3, 1, 2))
    assert same(dt.date(2026, 3, 1), dt.datetime(2026, 3, 1))
    assert not same(None, 0) and same(None, None)


def test_assert_same_fails_on_a_value_a_row_or_a_column_too_many() -> None:
    rows = {"category_funnel": [{"category": "A", "viewers": 2}]}
    assert_same(rows, rows, "itself", only=["category_funnel"])
    for other in ([{"category": "A", "viewers": 3}],
                  [{"category": "A", "viewers": 2}, {"category": "B", "viewers": 1}],
                  [{"category": "A", "viewers": 2, "buyers": 1}],
                  [{"category": "A"}]):
        with pytest.raises(AssertionError):
            assert_same(rows, {"category_funnel": other}, "changed", only=["category_funnel"])


def test_content_drops_bookkeeping_and_sorts_by_key() -> None:
    rels = {"stg_events": [{"event_id": "b", "load_id": 2, "source_file": "f", "line_number": 9},
                           {"event_id": "a", "load_id": 1, "source_file": "f", "line_number": 3}],
            "rejected_events": [{"raw": "x", "reason": "r", "line_number": 4, "load_id": 1}]}
    assert content(rels) == {"stg_events": [{"event_id": "a"}, {"event_id": "b"}],
                             "rejected_events": [("x", "r")]}
