"""Targets, one file each (`runner/engines/<type>.py`): an engine runs compiled SQL and
materializes relations; every target's file, compile-only ones included, says what its SQL
needs beyond sqlglot's translation (`SQL`, a TargetSql)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from runner.config import Config
    from runner.engines.base import Engine, TargetSql

# target types, which are sqlglot's dialect names
TARGETS = ("duckdb", "postgres", "spark", "snowflake", "bigquery", "redshift", "trino",
           "clickhouse", "databricks")


def target_sql(dialect: str) -> TargetSql:
    """`dialect`'s SQL differences, from its own file only (no driver, no connection); the
    source dialect's SQL runs as written."""
    from importlib import import_module

    from runner.dialect import is_source
    from runner.engines.base import TargetSql

    if dialect not in TARGETS:
        raise UsageError(f"unknown dialect '{dialect}' ({', '.join(TARGETS)})",
                         location="--dialect")
    if is_source(dialect):
        return TargetSql(dialect)
    hooks: TargetSql = import_module(f"runner.engines.{dialect}").SQL
    return hooks


def connect(project_dir: Path, config: Config, target_name: str, published: bool = False
            ) -> Engine:
    """The target's connection; `published` asks for what BI tools read (for DuckDB, the
    published file, read-only), otherwise where arpu builds."""
    target = config.targets[target_name]
    if target.type == "duckdb":
        from runner.engines.duckdb import DuckDBEngine

        return DuckDBEngine(project_dir, target, read_only=published, published=published)
    if target.type == "postgres":
        from runner.engines.postgres import PostgresEngine

        return PostgresEngine(project_dir, target, published=published)
    if target.type == "spark":
        from runner.engines.spark import SparkEngine

        return SparkEngine(project_dir, target)
    if target.type == "clickhouse":
        from runner.engines.clickhouse import ClickHouseEngine

        return ClickHouseEngine(project_dir, target, published=published)
    raise ConfigError(
        f"target '{target_name}' ({target.type}) is compile-only here: use `arpu compile --target "
        f"{target_name}`",
        location="--target",
    )
