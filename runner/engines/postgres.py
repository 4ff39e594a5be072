"""PostgreSQL through psycopg 3. The password comes only from the environment.

arpu works in `<schema>__work` (raw tables, incremental state, every model: all arpu's) and
publishes views in `<schema>`: `<schema>.<model>` is `select * from` a snapshot of the model in
the work schema (`"<model>$v<build>"`). A publish copies the models into new snapshots, then,
in one short transaction, points every view at them with `create or replace view`: readers see
the old set or the new set, and the views users made over arpu's views, with every grant on
them, stay. arpu records what it created in `<schema>__work.arpu_objects` and never drops or
replaces anything else: a published schema that holds other objects is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config import PostgresTarget
from runner.engines.base import Engine, TargetSql
from runner.errors import ArpuError, ConfigError
from runner.faults import fault_point

if TYPE_CHECKING:
    from sqlglot import exp

_PARAM = re.compile(r"\?")
RECORD = "arpu_objects"  # in the work schema: arpu's views in <schema>, and their snapshots
BUILD_INFO = "arpu_build_info"
# The server notices a client that is gone: during a query (PG 14+, `client_connection_check_
# interval`, a killed build) and on an idle connection (TCP keepalives); the client likewise.
_CHECK_CLIENT_MS = 2000
# No nested-loop joins where another join can do (a join with no equality still gets one):
# arpu's tables have no indexes, so a nested loop only ever suits a few rows, and the
# planner's row estimates for a CTE read twice or filtered on JSON text are often a few rows
# where there are thousands (derived_experiment_users on the sample: 0.08 s, or 2.8 s and 9M
# rows compared by nested loop, as ANALYZE's random sample fell). A table's size it estimates
# from its pages, analyzed or not.
# No JIT: a plan that needs a nested loop (a cross join, a join on no equality) costs over
# disable_cost (1e10) with nested loops off, past every JIT threshold, so LLVM compiled, inlined
# and optimized it whatever its size: 130-450 ms a query on tables of a hundred rows.
_SERVER_OPTIONS = ("-c timezone=UTC -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                   "-c tcp_keepalives_count=3 -c enable_nestloop=off -c jit=off")
_CLIENT_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30,
                                      "keepalives_interval": 10, "keepalives_count": 3}

# Everything in a schema a user could have made: relations, functions, standalone types. Row
# types of relations and array types come with what they belong to.
_CONTENTS = """
select o.kind, o.name, o.oid, r.name is not null as ours from (
    select case c.relkind when 'v' then 'view' when 'm' then 'materialized view'
           when 'f' then 'foreign table' when 'S' then 'sequence' when 'c' then 'type'
           else 'table' end as kind, c.relname::text as name, c.oid, true as relation
    from pg_class as c where c.relnamespace = {ns} and c.relkind in ('r','p','v','m','f','S','c')
    union all
    select 'function', p.proname::text, p.oid, false from pg_proc as p where p.pronamespace = {ns}
    union all
    select 'type', t.typname::text, t.oid, false from pg_type as t
    where t.typnamespace = {ns} and t.typrelid = 0 and t.typcategory <> 'A'
) as o
left join {record} as r on o.relation and r.kind = 'view' and r.name = o.name and r.oid = o.oid
order by o.name, o.kind
"""

# Who holds a lock on the relations a publish needs (any lock conflicts with its own).
_HOLDERS = """
select distinct on (a.pid) a.pid, coalesce(nullif(a.application_name, ''), a.usename::text),
       a.state, extract(epoch from now() - a.xact_start)::int, l.relation::regclass::text
from pg_locks as l join pg_stat_activity as a on a.pid = l.pid
where l.granted and l.relation = any(%(views)s || %(snapshots)s) and l.pid <> pg_backend_pid()
order by a.pid, l.relation = any(%(views)s) desc
"""


@dataclass
class _Published:
    """What the published schema holds, as arpu sees it."""

    views: dict[str, int] = field(default_factory=dict)  # arpu's views: name -> oid
    legacy: set[str] = field(default_factory=set)  # tables a schema-swapping arpu published
    foreign: list[tuple[str, str]] = field(default_factory=list)  # (kind, name): not arpu's


class PostgresSql(TargetSql):
    """The time spine is generate_series: the digits' five cross joins make 100,000 rows to
    keep a few hundred (0.5 to 1.3 s a metrics query on the sample, where the series takes
    milliseconds)."""

    def day_spine(self, bounds: str) -> exp.Query | None:
        """No rows when there are no bounds (nulls) or `lo` is after `hi`, as the digits give."""
        import sqlglot

        return sqlglot.parse_one(
            f'select cast(s.d as timestamp) as "day" from {bounds} as b cross join lateral '
            "generate_series(cast(b.lo as timestamp), cast(b.hi as timestamp), "
            "interval '1 day') as s(d)", read="postgres")  # type: ignore[return-value]


SQL = PostgresSql("postgres")  # this target's SQL differences (runner.engines.target_sql)


class PostgresEngine(Engine):
    dialect = "postgres"
    insert_by_name = False

    def __init__(self, project_dir: Path, target: PostgresTarget, published: bool = False
                 ) -> None:
        import psycopg

        self.target = target
        self.config_file = str(project_dir / "arpu.yml")
        self.where = f"{target.host}:{target.port}/{target.database}"
        self.published_schema = target.schema_
        self.work_schema = str(target.work_schema())
        self.schema = target.schema_ if published else self.work_schema
        _warn_if_unset(target.password_env)
        try:
            self.con = psycopg.connect(
                host=target.host, port=target.port, dbname=target.database, user=target.user,
                password=target.password, connect_timeout=10, autocommit=True,
                application_name="arpu", options=_SERVER_OPTIONS, **_CLIENT_KEEPALIVES,
            )
        except psycopg.Error as exc:
            # psycopg's message names host, port and user, never the password
            raise ArpuError(f"cannot connect to PostgreSQL: {_first_line(exc)}",
                            location=self.where) from None
        self.checks_client = self.con.info.server_version >= 140000
        if self.checks_client:
            self.con.execute(f"set client_connection_check_interval = {_CHECK_CLIENT_MS}")
        for schema in {self.schema, self.published_schema}:
            self.con.execute(f"create schema if not exists {self.quote(schema)}")
        self.con.execute(f"set search_path to {self.quote(self.schema)}")

    @property
    def sqlalchemy_url(self) -> str:
        """For Great Expectations' SQL datasource (password from the environment, in memory):
        the session arpu's own connection has (time zone, no nested loops, no JIT)."""
        from urllib.parse import quote

        t = self.target
        secret = f":{quote(t.password, safe='')}" if t.password else ""
        options = f"{_SERVER_OPTIONS} -csearch_path={self.schema}" + (
            f" -cclient_connection_check_interval={_CHECK_CLIENT_MS}" if self.checks_client else "")
        return f"postgresql+psycopg://{quote(t.user, safe='')}{secret}@{t.host}:{t.port}/" \
               f"{t.database}?application_name=arpu&options={quote(options, safe='')}"

    def gx_datasource(self, context: Any) -> tuple[Any, str, None]:
        url = self.sqlalchemy_url
        return context.data_sources.add_postgres(name="arpu", connection_string=url), "sql", None

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

    supports_delete_insert = True

    def _replace_rows(self, statements: list[str], counted: str, temporary: list[str],
                      after: list[str] | None) -> int:
        with self.con.transaction():
            for statement in statements:
                self.con.execute(statement)
            row = self.con.execute(f"select count(*) from {self.quote(counted)}").fetchone()
            for table in temporary:
                self.con.execute(f"drop table {self.quote(table)}")
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

    # -- publishing ------------------------------------------------------------------------
    def _q(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

    @property
    def _record(self) -> str:
        return self._q(self.work_schema, RECORD)

    def begin_build(self, carry: list[str], incremental: list[str]) -> None:
        """Refuse a schema arpu could not publish to before anything is built."""
        self._check(self._contents())

    def publish(self, names: list[str]) -> None:
        """Snapshot every model, point the published views at the snapshots in one short
        transaction (`_swap`), then drop the snapshots no view reads any more."""
        import psycopg

        key = f"arpu publish {self.published_schema}"  # one publish of a schema at a time
        self.con.execute("select pg_advisory_lock(hashtext(%s))", [key])
        try:
            self._check(self._contents())
            row = self.con.execute(f"select coalesce(max(build), 0) + 1 from {self._record}"
                                   ).fetchone()
            build = int(row[0]) if row else 1
            snapshots, xid = self._snapshot(names, build)
            fault_point("publish")
            try:
                self._swap(snapshots, build, xid)
            finally:
                with contextlib.suppress(psycopg.Error):
                    self._drop_unread()
        finally:
            with contextlib.suppress(psycopg.Error):
                self.con.execute("select pg_advisory_unlock(hashtext(%s))", [key])

    def _contents(self) -> _Published:
        """Sort what the published schema holds into arpu's views (as recorded), the tables an
        earlier arpu published by swapping schemas (adopted once), and the rest."""
        self.con.execute(f"create table if not exists {self._record} (kind text not null, "
                         "name text not null, oid oid not null, build bigint not null, "
                         "reads text, primary key (kind, name))")
        ns = "(select oid from pg_namespace where nspname = %(schema)s)"
        rows = self.con.execute(_CONTENTS.format(ns=ns, record=self._record),
                                {"schema": self.published_schema}).fetchall()
        found = _Published(views={r[1]: int(r[2]) for r in rows if r[3]})
        others = [(str(r[0]), str(r[1])) for r in rows if not r[3]]
        found.legacy = self._legacy(others) if not found.views else set()
        found.foreign = [o for o in others if o[1] not in found.legacy]
        return found

    def _legacy(self, others: list[tuple[str, str]]) -> set[str]:
        """Before views, arpu published tables by renaming a schema over `<schema>`: when the
        schema holds exactly `arpu_build_info` and tables of the models it lists, they are
        arpu's, and the first publish replaces them by views (refused while a user's view
        reads one, naming it)."""
        import psycopg

        if ("table", BUILD_INFO) not in others or any(k != "table" for k, _ in others):
            return set()
        try:
            listed = {r[0] for r in self.con.execute(
                f"select model from {self._q(self.published_schema, BUILD_INFO)}").fetchall()}
        except psycopg.Error:
            return set()
        tables = {name for _, name in others}
        return tables if tables <= listed | {BUILD_INFO} else set()

    def _check(self, found: _Published) -> None:
        """Refuse (exit 2) a schema holding what arpu did not create, and grants to roles that
        do not exist."""
        schema = self.published_schema
        if found.foreign:
            kind, name = found.foreign[0]
            more = len(found.foreign) - 1
            others = f" and {more} more object{'s' if more > 1 else ''}" if more else ""
            raise ConfigError(
                f"schema {schema} holds {kind} {schema}.{name}{others}, which arpu did not "
                "create: arpu publishes only into a schema of its own and drops nothing else; "
                "set the postgres target's schema to a new one (arpu creates it)",
                location=self.where)
        roles = sorted({r for rs in self.target.grants.values() for r in rs
                        if r.lower() != "public"})
        if roles:
            have = {r[0] for r in self.con.execute(
                "select rolname from pg_roles where rolname = any(%s)", [roles]).fetchall()}
            missing = [r for r in roles if r not in have]
            if missing:
                raise ConfigError(f"grants: role {missing[0]!r} does not exist in {self.where}",
                                  location=self.config_file)

    def _snapshot(self, names: list[str], build: int) -> tuple[dict[str, str], int]:
        """Copy each model into `<model>$v<build>` in the work schema, in one transaction
        (a killed build leaves none); their names, and the transaction's id."""
        snapshots = {name: _snapshot_name(name, build) for name in names}
        with self.con.transaction():
            for name, snapshot in snapshots.items():
                table = self._q(self.work_schema, snapshot)
                self.con.execute(f"create table {table} as select * from "
                                 f"{self._q(self.work_schema, name)}")
                self.con.execute(f"insert into {self._record} values ('snapshot', %s, "
                                 "%s::regclass, %s, null)", [snapshot, table, build])
            xid = self.con.execute("select txid_current() % 4294967296").fetchone()
        return snapshots, int(xid[0]) if xid else 0

    def _swap(self, snapshots: dict[str, str], build: int, xid: int) -> None:
        """In one transaction: take the locks (`_lock`), point each view at its snapshot,
        grant. Locks a reader holds make it try again after 1, 2, 4... seconds; after
        `publish_retries` the build fails naming the sessions that held them."""
        import psycopg

        # the queue's time was up, the deadlock detector chose the publish, a role's lock_timeout
        lock_wait_ended = (psycopg.errors.QueryCanceled, psycopg.errors.DeadlockDetected,
                            psycopg.errors.LockNotAvailable)
        self._wait_for_older_snapshots(xid)
        held, cause = "", ""
        tries = self.target.publish_retries + 1
        for attempt in range(tries):
            if attempt:
                time.sleep(2 ** (attempt - 1))
            found = self._contents()
            relations = [self._q(self.published_schema, n)
                         for n in sorted(found.views.keys() | found.legacy) if n in snapshots]
            try:
                with self.con.transaction():
                    self._lock(relations)
                    found = self._contents()  # as it is now that nobody else can change it
                    self._check(found)
                    for name, snapshot in snapshots.items():
                        self._point(name, snapshot, build, found)
                    self._grant(list(snapshots))
                return
            except lock_wait_ended as exc:
                cause = _first_line(exc)
                held = self._holders(relations) or held
        why = held or f"readers kept the locks ({cause})"
        raise ArpuError(
            f"could not publish after {tries} tries of {self.target.lock_timeout:g} s "
            f"(lock_timeout): {why}; the published views are unchanged: end that transaction, "
            "then build again", location=self.where)

    def _wait_for_older_snapshots(self, xid: int) -> None:
        """Wait, at most `lock_timeout`, for the transactions whose snapshot is older than the
        new snapshot tables: a REPEATABLE READ transaction that began before they were
        committed would read them empty."""
        deadline = time.monotonic() + self.target.lock_timeout
        while time.monotonic() < deadline:
            older = self.con.execute(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and backend_type = 'client backend' and pid <> pg_backend_pid() and "
                "backend_xmin is not null and age(backend_xmin) >= age(%s::text::xid)",
                [str(xid)]).fetchone()
            if not older or not older[0]:
                return
            time.sleep(0.05)

    def _lock(self, relations: list[str]) -> None:
        """ACCESS EXCLUSIVE locks on `relations`: polled with NOWAIT for up to `lock_timeout`
        (nobody waits behind the publish), then queued for, all of them within less than the
        server's deadlock_timeout. A reader queued behind the publish thus waits less than
        that, and is never the one the deadlock detector cancels: by the time its check runs,
        the publish has given up or holds every lock and waits for nothing."""
        import psycopg

        if not relations:
            return
        statement = f"lock table {', '.join(relations)} in access exclusive mode"
        deadline = time.monotonic() + self.target.lock_timeout
        while time.monotonic() < deadline:
            try:
                with self.con.transaction():  # a savepoint: a refusal releases what it took
                    self.con.execute(statement + " nowait")
                return
            except psycopg.errors.LockNotAvailable:
                time.sleep(0.01)
        row = self.con.execute(
            "select extract(epoch from current_setting('deadlock_timeout')::interval), "
            "current_setting('statement_timeout')").fetchone()
        deadlock, before = (float(row[0]), str(row[1])) if row else (1.0, "0")
        queue = min(self.target.lock_timeout, 0.8 * deadlock)
        self.con.execute("select set_config('statement_timeout', %s, true)",
                         [f"{int(queue * 1000)}ms"])
        self.con.execute(statement)
        self.con.execute("select set_config('statement_timeout', %s, true)", [before])

    def _point(self, name: str, snapshot: str, build: int, found: _Published) -> None:
        """`<schema>.<name>` reads `snapshot` from now on, and the record says so."""
        import psycopg

        view = self._q(self.published_schema, name)
        select = f"select * from {self._q(self.work_schema, snapshot)}"
        if name in found.legacy:
            self._drop(name, "table", self._oid(view))
            self.con.execute(f"create view {view} as {select}")
        elif name in found.views:
            try:
                with self.con.transaction():
                    self.con.execute(f"create or replace view {view} as {select}")
            except psycopg.errors.InvalidTableDefinition as exc:  # columns changed
                oid = found.views[name]
                grants = self._grants_of(oid, view)
                self._drop(name, "view", oid, because=_first_line(exc))
                self.con.execute(f"create view {view} as {select}")
                for statement in grants:
                    self.con.execute(statement)
        else:
            self.con.execute(f"create view {view} as {select}")
        self.con.execute(f"delete from {self._record} where kind = 'view' and name = %s", [name])
        self.con.execute(f"insert into {self._record} values ('view', %s, %s::regclass, %s, %s)",
                         [name, view, build, snapshot])

    def _oid(self, relation: str) -> int:
        row = self.con.execute("select %s::regclass::oid", [relation]).fetchone()
        return int(row[0]) if row else 0

    def _drop(self, name: str, kind: str, oid: int, because: str = "") -> None:
        """Drop arpu's own relation, unless something else reads it: then stop the publish
        naming what (arpu does not drop what it did not create)."""
        users = [r[0] for r in self.con.execute(
            "select distinct coalesce(r.ev_class::regclass::text, "
            "pg_describe_object(d.classid, d.objid, d.objsubid)) from pg_depend as d "
            "left join pg_rewrite as r on d.classid = 'pg_rewrite'::regclass and r.oid = d.objid "
            "where d.refclassid = 'pg_class'::regclass and d.refobjid = %(oid)s "
            "and d.deptype = 'n' and r.ev_class is distinct from %(oid)s order by 1",
            {"oid": oid}).fetchall()]
        if users:
            change = f"its columns changed ({because}), and " if because else ""
            raise ArpuError(
                f"{name}: {change}{', '.join(users)} read{'s' if len(users) == 1 else ''} "
                f"{self.published_schema}.{name}, which arpu would have to drop to publish "
                f"it as a view of the new columns; drop or change "
                f"{'it' if len(users) == 1 else 'them'}, then build again (the published "
                "views are unchanged)", location=self.where)
        self.con.execute(f"drop {kind} {self._q(self.published_schema, name)}")

    def _grants_of(self, oid: int, relation: str) -> list[str]:
        """The GRANT statements that give back what others hold on a relation."""
        rows = self.con.execute(
            "select a.privilege_type, case when a.grantee = 0 then 'public' "
            "else quote_ident(r.rolname) end, a.is_grantable "
            "from pg_class as c cross join lateral aclexplode(c.relacl) as a "
            "left join pg_roles as r on r.oid = a.grantee "
            "where c.oid = %s and a.grantee <> c.relowner", [oid]).fetchall()
        return [f"grant {p} on {relation} to {role}" + (" with grant option" if g else "")
                for p, role, g in rows]

    def _grant(self, names: list[str]) -> None:
        """arpu.yml's grants (`grants: {select: [bi_role]}`) on every published view."""
        views = ", ".join(self._q(self.published_schema, n) for n in names)
        for privilege, roles in sorted(self.target.grants.items()):
            for role in roles:
                grantee = "public" if role.lower() == "public" else self.quote(role)
                self.con.execute(f"grant usage on schema {self.quote(self.published_schema)} "
                                 f"to {grantee}")
                self.con.execute(f"grant {privilege} on {views} to {grantee}")

    def _holders(self, relations: list[str]) -> str:
        """`pid 123 (notebook, idle in transaction for 40 s) holds arpu.fct_orders`, ..."""
        if not relations:
            return ""
        oids = [int(r[0]) for r in self.con.execute(
            "select to_regclass(x)::oid from unnest(%s::text[]) as x", [relations]).fetchall()
            if r[0] is not None]
        snapshots = [int(r[0]) for r in self.con.execute(
            "select d.refobjid from pg_depend as d join pg_rewrite as w on w.oid = d.objid "
            "where d.classid = 'pg_rewrite'::regclass and w.ev_class = any(%s) "
            "and d.refclassid = 'pg_class'::regclass and d.refobjid <> w.ev_class",
            [oids]).fetchall()]
        rows = self.con.execute(_HOLDERS, {"views": oids, "snapshots": snapshots}).fetchall()
        return "; ".join(f"pid {pid} ({app}, {state} for {age if age is not None else '?'} s) "
                         f"holds {rel}" for pid, app, state, age, rel in rows)

    def _drop_unread(self) -> None:
        """Drop the snapshots no published view reads (the previous build's, or this one's
        when it was not published); one somebody still reads waits for the next publish."""
        import psycopg

        unread = self.con.execute(
            f"select s.name from {self._record} as s where s.kind = 'snapshot' and not exists "
            f"(select from {self._record} as v where v.kind = 'view' and v.reads = s.name)"
        ).fetchall()
        for (name,) in unread:
            table = self._q(self.work_schema, name)
            try:
                with self.con.transaction():
                    row = self.con.execute("select to_regclass(%s)", [table]).fetchone()
                    if row and row[0]:
                        self.con.execute(f"lock table {table} in access exclusive mode nowait")
                        self.con.execute(f"drop table {table}")
                    self.con.execute(f"delete from {self._record} where kind = 'snapshot' "
                                     "and name = %s", [name])
            except (psycopg.errors.LockNotAvailable,
                    psycopg.errors.DependentObjectsStillExist):
                continue

    def relation_exists(self, name: str) -> bool:
        row = self.con.execute(
            "select count(*) from information_schema.tables where table_schema = %s "
            "and table_name = %s", (self.schema, name)).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        self.con.close()


_warned: set[str] = set()  # variables already named: one warning per command (process)


def _warn_if_unset(variable: str) -> None:
    """A password_env that is not set is no error (trust or peer authentication, or libpq's own
    PGPASSWORD / ~/.pgpass, need none), but it is often a typo or a shell that did not export
    it: say so once, naming the variable, never a value."""
    if variable in os.environ or variable in _warned:
        return
    _warned.add(variable)
    sys.stderr.write(f"Warning: {variable} (password_env of the postgres target) is not set: "
                     "connecting to PostgreSQL without a password from it\n")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _snapshot_name(model: str, build: int) -> str:
    """`<model>$v<build>`: no model's name has a `$`, so a snapshot never takes one's; a long
    name is cut and keeps a hash, within PostgreSQL's 63 bytes."""
    suffix = f"$v{build}"
    if len(model) + len(suffix) <= 63:
        return model + suffix
    digest = hashlib.sha1(model.encode()).hexdigest()[:8]
    return f"{model[:63 - len(suffix) - 9]}_{digest}{suffix}"
