"""Vars as SPEC section 3 reads them: dates or ISO 8601 timestamps (UTC unless an offset)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from support.project import FIXTURES, ProjectHarness

from runner.config import Vars, merge_vars
from runner.errors import ConfigError

try:
    from tests.reference.harness import ReferenceProject
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from reference.harness import ReferenceProject  # type: ignore[no-redef]


def test_range_vars_take_dates_and_timestamps() -> None:
    v = merge_vars(Vars(), {"start_date": "2026-03-03T12:00:00+02:00",
                            "end_date": "2026-03-09T23:00:00Z", "promo_start": "2026-03-05"})
    assert v.start_date == dt.datetime(2026, 3, 3, 10)  # converted to UTC
    assert v.end_date == dt.datetime(2026, 3, 9, 23)
    assert v.promo_start == dt.date(2026, 3, 5)
    with pytest.raises(ConfigError, match="not a date or an ISO 8601 timestamp"):
        merge_vars(Vars(), {"start_date": "03/03/2026"})


@pytest.fixture(params=["reference", "product"])
def impl(request, tmp_path: Path):
    if request.param == "reference":
        return ReferenceProject()
    return ProjectHarness(tmp_path / "project")


def test_timestamp_range_cuts_within_a_day(impl) -> None:
    """analysis_range.ndjson: order x2 at 03-03 10:00 UTC is in [10:00 UTC, ...) when the start
    is 12:00+02:00 (it would be out if the offset were dropped); u1's view at 03-09 23:00 is out
    of [..., 23:00Z); u2's view of 03-05 enters and does not convert (its purchase came first)."""
    impl.ingest(FIXTURES / "analysis_range.ndjson")
    assert impl.build(start_date="2026-03-03T12:00:00+02:00",
                      end_date="2026-03-09T23:00:00Z").success
    (funnel,) = impl.rows("category_funnel")
    assert (funnel["viewers"], funnel["purchasers"]) == (1, 0)
    (stats,) = impl.rows("category_price_stats")
    assert (stats["purchased_lines"], stats["revenue"]) == (1, pytest.approx(10))
