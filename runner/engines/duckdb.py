"""DuckDB, the embedded default target.

Two files: the work database (raw tables) that only arpu opens, and the published database at the
target's `path` (every model, with its incremental watermark) that BI tools, `arpu show` and
`arpu test` read. A build writes its models straight into a new file, attached beside the work
database, and renames it over the published one when every model has passed: readers never wait
on arpu's lock, a reader that is already connected keeps the snapshot it opened, and a build that
fails or is killed leaves the last published file as it was. A build that keeps published
relations (models it does not rebuild, the tables incremental models append to) starts from a
byte copy of the published file, without the relations it rebuilds.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb

from runner import interrupts
from runner.config import DuckDBTarget
from runner.engines.base import WATERMARKS, WATERMARKS_DDL, Engine
from runner.errors import ArpuError
from runner.faults import fault_point

ROW_GROUP_ROWS = 122_880  # DuckDB's row group: the unit a query is split into across threads
# A build's memory when the target sets no memory_limit: this much per raw row, at least the
# floor, at most DuckDB's own default (80% of RAM). At 2M events stg_events peaks at 1.0 GB
# unbounded and runs as fast within 700 MB (it sorts less than it could hold).
BUILD_BYTES_PER_RAW_ROW = 350
BUILD_MEMORY_FLOOR = 512 * 2**20


class DuckDBEngine(Engine):
    dialect = "duckdb"
    hashes_uniqueness = True
    ingests_in_place = True

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
        if target.temp_directory:  # relative to the project, like `path`
            options["temp_directory"] = str(project_dir / target.temp_directory)
        try:
            self._main = duckdb.connect(str(self.path), read_only=read_only, config=options)
        except duckdb.Error as exc:
            raise ArpuError(f"cannot open the database: {exc}", location=str(self.path)) from None
        self._main.execute("set TimeZone = 'UTC'")
        self._main.execute("set enable_progress_bar = false")
        # DuckDB 2 materializes a subplan that a query reads twice: stg_events reads the raw
        # messages twice (keys, then the winners' payload) so that they are never held, and
        # that optimizer held them (2.4 GB at 2M events: peak RSS 1.8 GB, now 1.0 GB; CPU -19%)
        self._main.execute("set disabled_optimizers = 'common_subplan'")
        self._owner = threading.current_thread()
        self._local = threading.local()  # other threads' cursors (a build's model workers)
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._concurrency = target.concurrency
        self._memory_limited = bool(target.memory_limit)
        self._storage_version = target.storage_version
        self.work_catalog = str(self.con.execute("select current_database()").fetchall()[0][0])
        self._next: Path | None = None  # the file a build writes, published at the end
        self._continues = False  # this build continues incremental models (begin_build)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection of the calling thread: the engine's own, or a cursor of it that sees
        what it sees (a transaction belongs to one connection, so each thread needs one)."""
        if threading.current_thread() is self._owner:
            return self._main
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self.cursor()
            with self._lock:
                self._cursors.append(cursor)
        return cursor

    @property
    def concurrency(self) -> int:  # type: ignore[override]
        """Models a build runs at once: as configured, or else as many as DuckDB has threads
        while the work database holds fewer rows than that many row groups. DuckDB splits a
        query by row groups (122,880 rows), so on small data one model leaves cores idle for
        another; on large data each uses every core, and two at once only share the memory."""
        if self._concurrency:
            return self._concurrency
        threads = int(self.scalar("select current_setting('threads')"))
        # a build that continues incremental models reads mostly their new rows: small
        # queries again, beside the few that rebuild a mart whole (-11% of a 2M-event
        # increment's time)
        small = self._continues or self._work_rows() < threads * ROW_GROUP_ROWS
        return min(threads, 4) if small else 1

    def _work_rows(self) -> int:
        return int(self.scalar("select coalesce(sum(estimated_size), 0) from duckdb_tables() "
                               "where database_name = ?", [self.work_catalog]))

    def _bound_build_memory(self) -> None:
        """Without a configured memory_limit, bound a build's memory by the raw data's size
        (BUILD_BYTES_PER_RAW_ROW), never above DuckDB's default (80% of RAM), which lets a
        build keep what it reads until then. Ingest keeps DuckDB's default."""
        if self._memory_limited:
            return
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        wanted = max(BUILD_MEMORY_FLOOR, self._work_rows() * BUILD_BYTES_PER_RAW_ROW)
        self.con.execute(f"set memory_limit = '{min(wanted, ram * 8 // 10) // 2**20}MiB'")

    def _close_cursors(self) -> None:
        with self._lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
        self._local = threading.local()

    def _session_statements(self) -> list[str]:
        """What a connection runs to see what a build sees: the file it writes, then raw."""
        if self._next is None:
            return []
        return ["use arpu_next", "set search_path = " + _literal(
            f"arpu_next.main,{self.quote(self.work_catalog)}.main")]

    def cursor(self, parent: duckdb.DuckDBPyConnection | None = None
               ) -> duckdb.DuckDBPyConnection:
        """A new connection (of `parent`, else of the engine's) that sees what it sees."""
        cur = (parent or self._main).cursor()
        for statement in self._session_statements():
            cur.execute(statement)
        return cur

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
            # the first error is the one to report: after an I/O error (a full disk) DuckDB
            # has already ended the transaction, and its rollback error would hide the cause
            with suppress(duckdb.Error):
                self.con.execute("rollback")
            raise

    def materialize(self, name: str, select_sql: str, kind: str,
                    after: list[str] | None = None) -> int | None:
        q = self.quote(name)
        with self._transaction(after):
            self._drop_other(name, "table" if kind == "view" else "view")
            relation = "view" if kind == "view" else "table"
            created = self.con.execute(f"create or replace {relation} {q} as {select_sql}")
            rows = None if kind == "view" else int(created.fetchall()[0][0])  # CTAS's count
        return rows

    supports_delete_insert = True

    def _replace_rows(self, statements: list[str], counted: str, temporary: list[str],
                      after: list[str] | None) -> int:
        with self._transaction(after):
            for statement in statements:
                self.con.execute(statement)
            rows = int(self.con.execute(f"select count(*) from {self.quote(counted)}"
                                        ).fetchall()[0][0])
            for table in temporary:
                self.con.execute(f"drop table {self.quote(table)}")
        return rows

    def _drop_other(self, name: str, kind: str) -> None:
        catalog, column = ("duckdb_views()", "view_name") if kind == "view" else (
            "duckdb_tables()", "table_name")
        found = self.scalar(f"select count(*) from {catalog} where database_name = "
                            f"current_database() and schema_name = 'main' and {column} = ?", [name])
        if found:
            self.con.execute(f"drop {kind} {self.quote(name)}")

    def begin_build(self, carry: list[str], incremental: list[str]) -> None:
        """Attach the file this build writes. When it keeps published relations (the `carry`
        models it does not run, the `incremental` models that continue from their watermark),
        it starts as a byte copy of the published file without the others: copying the file
        costs what the disk reads, where copying its tables row by row recompressed them (4.3
        s of 2M-event stg_events, on every incremental build)."""
        target = self.published_path
        for stale in target.parent.glob(target.name + ".publishing-*"):
            stale.unlink(missing_ok=True)  # left by a build that was killed
        next_path = target.with_name(f"{target.name}.publishing-{os.getpid()}")
        self._bound_build_memory()
        keep = self._published_to_keep(carry, incremental) if target.exists() else []
        self._continues = bool(set(keep) & set(incremental))
        self._next = next_path  # from here on, abandon_build removes it (Ctrl-C in the copy)
        if keep:
            try:
                shutil.copyfile(target, next_path)
            except OSError as exc:  # a full disk: no half-written copy stays
                next_path.unlink(missing_ok=True)
                raise ArpuError(f"cannot copy the published file: {exc.strerror or exc}",
                                location=str(next_path)) from None
            fault_point("begin_build:copied")
        options = (f" (storage_version {_literal(self._storage_version)})"
                   if self._storage_version else "")
        self.con.execute(f"attach {_literal(str(self._next))} as arpu_next{options}")
        for statement in self._session_statements():
            self.con.execute(statement)
        self.con.execute(WATERMARKS_DDL)
        if keep:
            self._drop_all_but(keep)

    def _published_to_keep(self, carry: list[str], incremental: list[str]) -> list[str]:
        """The published tables a build starts from: `carry` ones, and `incremental` ones with
        a watermark."""
        if not (carry or incremental):
            return []
        self.con.execute(f"attach {_literal(str(self.published_path))} as arpu_published "
                         "(read_only)")
        try:
            tables = {r[0] for r in self.con.execute(
                "select table_name from duckdb_tables() where database_name = "
                "'arpu_published' and schema_name = 'main'").fetchall()}
            marks = {r[0] for r in self.con.execute(
                f"select distinct model from arpu_published.main.{WATERMARKS}").fetchall()
                } if WATERMARKS in tables else set()
        finally:
            self.con.execute("detach arpu_published")
        return [n for n in dict.fromkeys(carry) if n in tables] + [
            n for n in incremental if n in tables and n in marks and n not in carry]

    def _drop_all_but(self, keep: list[str]) -> None:
        """Drop from the copied file every relation but `keep` (and the watermarks of the kept
        ones), then checkpoint so that the tables written next reuse the dropped blocks."""
        relations = self.con.execute(
            "select 'table', table_name from duckdb_tables() where database_name = 'arpu_next' "
            "and schema_name = 'main' union all select 'view', view_name from duckdb_views() "
            "where database_name = 'arpu_next' and schema_name = 'main' and not internal"
        ).fetchall()
        self.con.execute("begin transaction")
        for kind, name in relations:
            if name not in keep and name != WATERMARKS:
                self.con.execute(f"drop {kind} {self.quote(name)}")
        self.con.execute(f"delete from {WATERMARKS} where not list_contains(?, model)", [keep])
        self.con.execute("commit")
        self.con.execute("checkpoint arpu_next")

    def publish(self, names: list[str]) -> None:
        """Rename the file this build wrote over the published database: all relations change
        at once. Views become tables (the published file holds no raw data to read)."""
        assert self._next is not None, "publish without begin_build"
        views = [r[0] for r in self.con.execute(
            "select view_name from duckdb_views() where database_name = 'arpu_next' "
            "and schema_name = 'main' and not internal").fetchall()]
        for view in views:
            q, tmp = self.quote(view), self.quote(f"__arpu_view_{view}")
            self.con.execute("begin transaction")
            self.con.execute(f"create table {tmp} as select * from {q}")
            self.con.execute(f"drop view {q}")
            self.con.execute(f"alter table {tmp} rename to {q}")
            self.con.execute("commit")
        self.con.execute("checkpoint arpu_next")
        written = self._next
        try:  # from here on, this block removes the file: abandon_build no longer knows it
            self._next = None
            self._leave_next()
            fd = os.open(written, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fault_point("publish")
            # a WAL beside the published file belongs to the file being replaced (a reader that
            # wrote, or crashed): replayed against the new file it would make it unopenable
            self.published_path.with_name(self.published_path.name + ".wal").unlink(
                missing_ok=True)
            interrupts.published()  # a Ctrl-C from here on lets the rename happen
            os.replace(written, self.published_path)
            fault_point("published")
        except BaseException:  # Ctrl-C during the fsync, say: the unpublished file goes too
            _remove_with_wal(written)
            raise
        dir_fd = os.open(self.published_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abandon_build(self) -> None:
        """Drop the file of a build that will not be published."""
        if self._next is None:
            return
        tmp, self._next = self._next, None
        try:
            self._leave_next()
        finally:  # whatever state the connection is in, the unpublished file goes
            _remove_with_wal(tmp)

    def _leave_next(self) -> None:
        self._continues = False
        self._close_cursors()
        with suppress(duckdb.Error):  # a failed transaction must be ended before detaching
            self.con.execute("rollback")
        self.con.execute(f"use {self.quote(self.work_catalog)}")
        self.con.execute("reset search_path")
        self.con.execute("detach database if exists arpu_next")  # not yet, if stopped early

    def gx_prepare(self) -> None:
        with suppress(ImportError):  # reported when the datasource is made
            import duckdb_engine  # noqa: F401

    def gx_datasource(self, context: Any) -> tuple[Any, str, Callable[[], None]]:
        """GX's connections are cursors of one cursor of the engine's connection: the same
        database (they see what a build sees), and the engine's own connection is never used."""
        try:
            from duckdb_engine import ConnectionWrapper
            from sqlalchemy.dialects import registry
        except ImportError:
            raise ArpuError("validating on DuckDB needs the duckdb-engine package: "
                            "pip install 'duckdb-engine>=0.13' 'sqlalchemy>=2,<2.1'") from None
        registry.register("duckdb.arpu", __name__, "ArpuDuckDBDialect")
        base = self.con.cursor()
        datasource = context.data_sources.add_sql(
            name="arpu", connection_string="duckdb+arpu:///:memory:",
            kwargs={"creator": lambda: ConnectionWrapper(self.cursor(base))})
        return datasource, "sql", base.close

    def relation_exists(self, name: str) -> bool:
        return bool(self.existing([name]))

    def existing(self, names: list[str]) -> list[str]:
        """In the file being built, or in the work database (raw tables): one query."""
        if not names:
            return []
        found = {row[0] for row in self.fetch(
            "select table_name from information_schema.tables where table_schema = 'main' "
            "and table_catalog in (current_database(), ?) and list_contains(?, table_name)",
            [self.work_catalog, names])[1]}
        return [name for name in names if name in found]

    def close(self) -> None:
        self.abandon_build()
        self._close_cursors()
        self._main.close()


def _remove_with_wal(path: Path) -> None:
    for file in (path, path.with_name(path.name + ".wal")):
        file.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_DUCKDB_TYPES = {"double": "double precision", "decimal": "numeric", "blob": "bytea"}


def _duckdb_dialect() -> type:
    """duckdb-engine's SQLAlchemy dialect, adapted to a read-only validation connection.

    - No transactions: SQLAlchemy 2 rolls a connection back when GX returns it to the pool,
      before GX fetches the rows, and a DuckDB connection has a single result set, so the rows
      would be lost (GX issue #11579, duckdb-engine #1087). Validation only reads, and DuckDB
      runs every statement in its own transaction, so begin/commit/rollback are no-ops.
    - Reflection from DuckDB's information_schema: duckdb-engine's pg_catalog emulation takes
      50-70 ms per table (and fails on SQLAlchemy 2.1), for column names and types GX needs.
    """
    global _DIALECT
    if _DIALECT is not None:
        return _DIALECT
    from duckdb_engine import Dialect
    from sqlalchemy import types

    class ArpuDuckDBDialect(Dialect):  # type: ignore[misc]
        supports_statement_cache = False

        def do_begin(self, dbapi_connection: Any) -> None:
            pass

        def do_commit(self, dbapi_connection: Any) -> None:
            pass

        def do_rollback(self, dbapi_connection: Any) -> None:
            pass

        def has_table(self, connection: Any, table_name: str, schema: str | None = None,
                      **kw: Any) -> bool:
            found = connection.exec_driver_sql(
                "select count(*) from information_schema.tables where table_name = ? "
                "and table_schema = coalesce(?, current_schema())", (table_name, schema)).scalar()
            return bool(found)

        def get_columns(self, connection: Any, table_name: str, schema: str | None = None,
                        **kw: Any) -> Any:
            rows = connection.exec_driver_sql(
                "select column_name, data_type, is_nullable from information_schema.columns "
                "where table_name = ? and table_schema = coalesce(?, current_schema()) "
                "order by ordinal_position", (table_name, schema)).fetchall()
            if not rows:
                from sqlalchemy.exc import NoSuchTableError

                raise NoSuchTableError(table_name)
            columns = []
            for name, data_type, nullable in rows:
                base = str(data_type).lower().split("(")[0].strip()
                type_class = self.ischema_names.get(_DUCKDB_TYPES.get(base, base),
                                                    types.NullType)
                columns.append({"name": name, "type": type_class(), "nullable": nullable == "YES",
                                "default": None, "autoincrement": False})
            return columns

        def get_pk_constraint(self, connection: Any, table_name: str,
                              schema: str | None = None, **kw: Any) -> Any:
            return {"constrained_columns": [], "name": None}  # models are built by CTAS

    _DIALECT = ArpuDuckDBDialect
    return _DIALECT


_DIALECT: type | None = None


def __getattr__(name: str) -> Any:
    """SQLAlchemy loads the dialect by name (`duckdb+arpu://`) from this module, lazily."""
    if name == "ArpuDuckDBDialect":
        return _duckdb_dialect()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
