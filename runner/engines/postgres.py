"""PostgreSQL through psycopg 3. The password comes only from the environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.config import PostgresTarget
from runner.engines.base import Engine
from runner.errors import ArpuError
from runner.faults import fault_point

_PARAM = re.compile(r"\?")


class PostgresEngine(Engine):
    dialect = "postgres"

    def __init__(self, project_dir: Path, target: PostgresTarget, published: bool = False
                 ) -> None:
        import psycopg

        from runner.compile import work_schema

        self.target = target
        self.published_schema = target.schema_
        # arpu builds in `<schema>__work` (raw tables, incremental state, every model) and
        # swaps a complete copy into `<schema>` in one transaction (publish)
        self.schema = target.schema_ if published else str(work_schema(target.schema_))
        try:
            self.con = psycopg.connect(
                host=target.host, port=target.port, dbname=target.database, user=target.user,
                password=target.password, connect_timeout=10, autocommit=True,
                options="-c timezone=UTC",
            )
        except psycopg.Error as exc:
            # psycopg's message names host, port and user, never the password
            raise ArpuError(f"cannot connect to PostgreSQL: {_first_line(exc)}",
                            location=f"{target.host}:{target.port}/{target.database}") from None
        for schema in {self.schema, self.published_schema}:
            self.con.execute(f"create schema if not exists {self.quote(schema)}")
        self.con.execute(f"set search_path to {self.quote(self.schema)}")

    @property
    def sqlalchemy_url(self) -> str:
        """For Great Expectations' SQL datasource (password from the environment, in memory)."""
        from urllib.parse import quote

        t = self.target
        secret = f":{quote(t.password, safe='')}" if t.password else ""
        return f"postgresql+psycopg://{quote(t.user, safe='')}{secret}@{t.host}:{t.port}/" \
               f"{t.database}?options=-csearch_path%3D{self.schema}"

    def _sql(self, sql: str) -> str:
        return _PARAM.sub("%s", sql.replace("%", "%%")) if "?" in sql else sql

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        import psycopg

        try:
            self.con.execute(self._sql(sql) if params else sql, params)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise ArpuError(_first_line(exc), location="postgres") from exc

    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        import psycopg

        try:
            cur = self.con.execute(self._sql(sql) if params else sql, params)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise ArpuError(_first_line(exc), location="postgres") from exc
        columns = [d.name for d in cur.description or []]
        return columns, cur.fetchall()

    supports_merge = True

    def merge(self, name: str, select_sql: str, keys: list[str],
              after: list[str] | None = None) -> int:
        new = f"__arpu_new_{name}"
        with self.con.transaction():
            for statement in self._merge_statements(name, new, select_sql, keys):
                self.con.execute(statement)
            row = self.con.execute(f"select count(*) from {self.quote(new)}").fetchone()
            self.con.execute(f"drop table {self.quote(new)}")
            for statement in after or []:
                self.con.execute(statement)
        return int(row[0]) if row else 0

    def materialize(self, name: str, select_sql: str, kind: str,
                    after: list[str] | None = None) -> int | None:
        """Replace the relation in one transaction: readers see the old or the new one."""
        q = f"{self.quote(self.schema)}.{self.quote(name)}"
        existing = self.con.execute(
            "select table_type from information_schema.tables where table_schema = %s "
            "and table_name = %s", (self.schema, name)).fetchone()
        with self.con.transaction():
            if existing:
                kind_sql = "view" if existing[0] == "VIEW" else "table"
                self.con.execute(f"drop {kind_sql} {q} cascade")
            if kind == "view":
                self.con.execute(f"create view {q} as {select_sql}")
            else:
                self.con.execute(f"create table {q} as {select_sql}")
            for statement in after or []:
                self.con.execute(statement)
            if kind == "view":
                return None
            row = self.con.execute(f"select count(*) from {q}").fetchone()
        return int(row[0]) if row else 0

    def append_raw(self, local: Any, load_id_offset: int) -> None:
        """COPY each raw table's rows in, in one transaction with the load's accounting row."""
        with self.con.transaction():
            for table in ("raw_events", "raw_rejected", "raw_loads"):
                cur = local.execute(f"select * exclude (load_id), load_id + {load_id_offset} "
                                    f"as load_id from {table}")
                columns = [d[0] for d in cur.description]
                target = f"{self.quote(self.schema)}.{self.quote(table)}"
                cols = ", ".join(self.quote(c) for c in columns)
                with self.con.cursor().copy(f"copy {target} ({cols}) from stdin") as copy:
                    while batch := cur.fetchmany(10_000):
                        for row in batch:
                            copy.write_row(row)

    def publish(self, names: list[str]) -> None:
        """Copy the relations into `<schema>__next`, then swap it for `<schema>` in one short
        transaction: readers see the old set or the new set, never a mix."""
        nxt = self.quote(f"{self.published_schema}__next")
        self.con.execute(f"drop schema if exists {nxt} cascade")  # left by a killed build
        self.con.execute(f"create schema {nxt}")
        for name in names:
            q = self.quote(name)
            self.con.execute(f"create table {nxt}.{q} as select * from "
                             f"{self.quote(self.schema)}.{q}")
        fault_point("publish")
        with self.con.transaction():
            self.con.execute(f"drop schema if exists {self.quote(self.published_schema)} "
                             "cascade")
            self.con.execute(f"alter schema {nxt} rename to "
                             f"{self.quote(self.published_schema)}")

    def relation_exists(self, name: str) -> bool:
        row = self.con.execute(
            "select count(*) from information_schema.tables where table_schema = %s "
            "and table_name = %s", (self.schema, name)).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        self.con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
