"""DuckDB, the embedded default target.

Two files: the work database (raw tables, incremental state, every model as built) that only
arpu opens, and the published database at the target's `path` that BI tools, `arpu show` and
`arpu test` read. A successful build writes a complete copy of its relations to a new file and
renames it over the published one: readers never wait on arpu's lock, a reader that is already
connected keeps the snapshot it opened, and a build that fails or is killed leaves the last
published file as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from runner.config import DuckDBTarget
from runner.engines.base import Engine
from runner.errors import ArpuError
from runner.faults import fault_point


class DuckDBEngine(Engine):
    dialect = "duckdb"

    def __init__(self, project_dir: Path, target: DuckDBTarget, read_only: bool = False,
                 published: bool = False) -> None:
        self.published_path = Path(target.path)
        if not self.published_path.is_absolute():
            self.published_path = project_dir / self.published_path
        if target.work_path:
            work = Path(target.work_path)
            self.work_path = work if work.is_absolute() else project_dir / work
        else:
            self.work_path = self.published_path.with_name(
                self.published_path.stem + ".work" + self.published_path.suffix)
        self.path = self.published_path if published else self.work_path
        if published and not self.path.exists():
            raise ArpuError("nothing is published yet: run `arpu build`", location=str(self.path))
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

    supports_merge = True

    @contextmanager
    def _transaction(self, after: list[str] | None) -> Iterator[None]:
        """One transaction around the body and the `after` statements (watermarks)."""
        self.con.execute("begin transaction")
        try:
            yield
            for statement in after or []:
                self.con.execute(statement)
            self.con.execute("commit")
        except BaseException:
            self.con.execute("rollback")
            raise

    def materialize(self, name: str, select_sql: str, kind: str,
                    after: list[str] | None = None) -> int | None:
        q = self.quote(name)
        with self._transaction(after):
            self._drop_other(name, "table" if kind == "view" else "view")
            relation = "view" if kind == "view" else "table"
            self.con.execute(f"create or replace {relation} {q} as {select_sql}")
        return None if kind == "view" else int(self.scalar(f"select count(*) from {q}"))

    def merge(self, name: str, select_sql: str, keys: list[str],
              after: list[str] | None = None) -> int:
        new = self.quote(f"__arpu_new_{name}")
        with self._transaction(after):
            for statement in self._merge_statements(name, f"__arpu_new_{name}", select_sql,
                                                    keys):
                self.con.execute(statement)
            rows = int(self.con.execute(f"select count(*) from {new}").fetchall()[0][0])
            self.con.execute(f"drop table {new}")
        return rows

    def _drop_other(self, name: str, kind: str) -> None:
        catalog, column = ("duckdb_views()", "view_name") if kind == "view" else (
            "duckdb_tables()", "table_name")
        found = self.scalar(f"select count(*) from {catalog} where schema_name = current_schema() "
                            f"and {column} = ?", [name])
        if found:
            self.con.execute(f"drop {kind} {self.quote(name)}")

    def publish(self, names: list[str]) -> None:
        """Copy `names` (every relation of the work database they are in) into a new file and
        rename it over the published database: all relations change at once."""
        target = self.published_path
        for stale in target.parent.glob(target.name + ".publishing-*"):
            stale.unlink(missing_ok=True)  # left by a build that was killed while publishing
        tmp = target.with_name(f"{target.name}.publishing-{os.getpid()}")
        self.con.execute(f"attach '{tmp}' as publishing")
        try:
            for name in names:
                q = self.quote(name)
                self.con.execute(f"create table publishing.{q} as select * from main.{q}")
            self.con.execute("checkpoint publishing")
        finally:
            self.con.execute("detach publishing")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fault_point("publish")
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def relation_exists(self, name: str) -> bool:
        return bool(self.scalar(
            "select count(*) from information_schema.tables where table_schema = current_schema() "
            "and table_name = ?", [name]))

    def close(self) -> None:
        self.con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
