"""Databricks, compile-only: arpu writes its SQL (`arpu compile`, `arpu query --explain`) and
runs nothing there. Its SQL is Spark's, with the same differences (runner/engines/spark.py)."""

from __future__ import annotations

from runner.engines.spark import SparkSql

SQL = SparkSql("databricks")  # this target's SQL differences (runner.engines.target_sql)
