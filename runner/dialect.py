"""The models' source dialect, and the one way SQL written in it reaches a target's."""

from __future__ import annotations

SOURCE_DIALECT = "duckdb"  # models, macros, expectations and arpu's own SQL are written in it


def transpile(sql: str, dialect: str) -> str:
    """`sql`, written in the source dialect, for `dialect`: unchanged for the source dialect
    itself, else translated by sqlglot (one statement)."""
    if dialect == SOURCE_DIALECT:
        return sql
    import sqlglot

    return sqlglot.transpile(sql, read=SOURCE_DIALECT, write=dialect)[0]
