"""Trino, compile-only: arpu writes its SQL (`arpu compile`, `arpu query --explain`) and runs
nothing there, so this file holds only what its SQL needs beyond sqlglot's translation."""

from __future__ import annotations

from runner.engines.base import TargetSql


class TrinoSql(TargetSql):
    """It has no exact percentile aggregate (approx_percentile only): arpu refuses rather than
    estimate."""

    exact_percentiles = False


SQL = TrinoSql("trino")  # this target's SQL differences (runner.engines.target_sql)
