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


def without_trailing(sql: str, dialect: str) -> str:
    """`sql` up to its last token: without what follows it, semicolons and comments (a `--`
    comment at the end would swallow the parenthesis of a query that wraps it)."""
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError:  # left for the database to report
        return sql.strip()
    body = [t for t in tokens if t.token_type != TokenType.SEMICOLON]
    return sql[:body[-1].end + 1] if body else ""
