"""The models' source dialect, and the one way SQL written in it reaches a target's."""

from __future__ import annotations

SOURCE_DIALECT = "duckdb"  # models, macros, expectations and arpu's own SQL are written in it


def quoted(identifier: str) -> str:
    """`identifier` quoted in the source dialect (DuckDB's, which is standard SQL's): what
    sqlglot writes, without importing sqlglot (read-only commands never load it)."""
    return '"' + identifier.replace('"', '""') + '"'


def is_source(dialect: str) -> bool:
    """SQL in the source dialect runs as written on this dialect."""
    return dialect == SOURCE_DIALECT


def transpile(sql: str, dialect: str) -> str:
    """`sql`, written in the source dialect, for `dialect`: unchanged for the source dialect
    itself, else translated by sqlglot (one statement)."""
    if is_source(dialect):
        return sql
    import sqlglot

    return sqlglot.transpile(sql, read=SOURCE_DIALECT, write=dialect)[0]
