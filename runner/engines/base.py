"""What every execution target provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Engine(ABC):
    dialect: str

    @abstractmethod
    def execute(self, sql: str, params: list[Any] | None = None) -> None: ...

    @abstractmethod
    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Columns and rows of a query."""

    @abstractmethod
    def materialize(self, name: str, select_sql: str, kind: str) -> int | None:
        """Create or replace `name` as a table or view of `select_sql`; rows when known."""

    @abstractmethod
    def relation_exists(self, name: str) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...

    def ensure_raw_tables(self) -> None:
        """Create raw_events, raw_rejected and raw_loads if missing (DDL of runner/ingest.py)."""
        import sqlglot

        from runner.ingest import RAW_TABLES

        for statement in sqlglot.transpile(RAW_TABLES, read="duckdb", write=self.dialect):
            if self.dialect == "spark":  # Spark's JSON is text; its tables are Parquet
                statement = (statement.replace("TIMESTAMP_NTZ", "TIMESTAMP")
                             .replace(" JSON", " STRING") + " USING PARQUET")
            self.execute(statement)

    def append_raw(self, local: Any, load_id_offset: int) -> None:
        """Copy the raw tables of a local DuckDB connection (one ingest) into this target."""
        raise NotImplementedError(f"ingest into {self.dialect} is not supported")

    def publish(self, names: list[str]) -> None:
        """Make the built relations visible to readers; engines that replace each relation in
        place (PostgreSQL in one transaction per model, Spark) have nothing more to do."""

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        rows = self.fetch(sql, params)[1]
        return rows[0][0] if rows else None
