"""BigQuery, compile-only: arpu writes its SQL (`arpu compile`, `arpu query --explain`) and runs
nothing there, so this file holds only what its SQL needs beyond sqlglot's translation."""

from __future__ import annotations

from runner.engines.base import TargetSql


class BigQuerySql(TargetSql):
    """Its WEEK starts on Sunday (ISOWEEK is Monday's); it has no exact percentile aggregate,
    and arpu refuses rather than estimate."""

    week_unit = "ISOWEEK"
    exact_percentiles = False


SQL = BigQuerySql("bigquery")  # this target's SQL differences (runner.engines.target_sql)
