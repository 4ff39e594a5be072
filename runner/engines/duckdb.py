"""DuckDB, the embedded default target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from runner.config import DuckDBTarget
from runner.engines.base import Engine
from runner.errors import ArpuError


class DuckDBEngine(Engine):
    dialect = "duckdb"

    def __init__(self, project_dir: Path, target: DuckDBTarget, read_only: bool = False) -> None:
        self.path = Path(target.path)
        if not self.path.is_absolute():
            self.path = project_dir / self.path
        options: dict[str, Any] = {}
        if target.threads:
            options["threads"] = target.threads
        if target.memory_limit:
            options["memory_limit"] = target.memory_limit
        if target.temp_directory:
            options["temp_directory"] = target.temp_directory
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only, config=options)
        except duckdb.Error as exc:
            raise ArpuError(f"cannot open the database: {exc}", location=str(self.path)) from None
        self.con.execute("set TimeZone = 'UTC'")
        self.con.execute("set enable_progress_bar = false")

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        try:
            self.con.execute(sql, params)
        except duckdb.Error as exc:
            raise ArpuError(_first_line(exc), location=str(self.path)) from exc

    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        try:
            cur = self.con.execute(sql, params)
        except duckdb.Error as exc:
            raise ArpuError(_first_line(exc), location=str(self.path)) from exc
        columns = [d[0] for d in cur.description or []]
        return columns, cur.fetchall()

    def materialize(self, name: str, select_sql: str, kind: str) -> int | None:
        q = self.quote(name)
        if kind == "view":
            self._drop_other(name, "table")
            self.con.execute(f"create or replace view {q} as {select_sql}")
            return None
        self._drop_other(name, "view")
        self.con.execute(f"create or replace table {q} as {select_sql}")
        return int(self.scalar(f"select count(*) from {q}"))

    def _drop_other(self, name: str, kind: str) -> None:
        catalog, column = ("duckdb_views()", "view_name") if kind == "view" else (
            "duckdb_tables()", "table_name")
        found = self.scalar(f"select count(*) from {catalog} where schema_name = current_schema() "
                            f"and {column} = ?", [name])
        if found:
            self.con.execute(f"drop {kind} {self.quote(name)}")

    def relation_exists(self, name: str) -> bool:
        return bool(self.scalar(
            "select count(*) from information_schema.tables where table_schema = current_schema() "
            "and table_name = ?", [name]))

    def close(self) -> None:
        self.con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
