"""Redshift, compile-only: arpu writes its SQL (`arpu compile`, `arpu query --explain`) and runs
nothing there. sqlglot's translation from the source dialect is all its SQL needs; a difference
it comes to need goes here."""

from __future__ import annotations

from runner.engines.base import TargetSql

SQL = TargetSql("redshift")  # this target's SQL differences (runner.engines.target_sql)
