"""PostgreSQL publishing (issue 17): arpu drops or replaces only what it created, users' views
over its relations and the grants on them survive a publish, BI readers neither make a build
fail nor wait behind it for more than a few seconds, and a killed build's query stops on the
server. Real PostgreSQL, real `arpu` processes, small hand-fixture projects."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.project import (
    FIXTURES,
    POSTGRES_DSN,
    ProjectHarness,
    arpu_env,
    run_arpu,
    use_isolated_targets,
)

from runner.context import Context

pytestmark = [pytest.mark.postgres]

PID = os.getpid()
PROBES = FIXTURES / "postgres_publish"
BI_ROLE = f"arpu_test_bi_{PID}"  # granted by arpu.yml (`grants:`)
ANALYST = f"arpu_test_analyst_{PID}"  # granted by hand, by the warehouse's owner
USERS = f"arpu_test_users_{PID}"  # a schema of the users' own views, beside arpu's
LOCK_TIMEOUT = 1.0  # the module's projects: seconds per lock wait, 2 retries


def pg() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_DSN, autocommit=True)


@pytest.fixture(scope="module", autouse=True)
def _drop_what_the_tests_create() -> Iterator[None]:
    """Leave the shared `test` database as it was: this process's schemas and roles."""
    with pg() as con:
        for role in (BI_ROLE, ANALYST):
            con.execute(f'drop role if exists "{role}"')
            con.execute(f'create role "{role}"')
    yield
    with pg() as con:
        schemas = con.execute("select nspname from pg_namespace where nspname ~ %s",
                              [rf"^arpu_test_.*_{PID}(__work|__next)?$"]).fetchall()
        for (schema,) in schemas:
            con.execute(f'drop schema "{schema}" cascade')
        for role in (BI_ROLE, ANALYST):
            con.execute(f'drop role if exists "{role}"')


def postgres_project(root: Path, name: str, **target: Any) -> ProjectHarness:
    """A project copy whose default target is its own PostgreSQL schema."""
    project = ProjectHarness(root)
    use_isolated_targets(project, name)
    path = project.root / "arpu.yml"
    config = yaml.safe_load(path.read_text())
    config["target"] = "postgres"
    config["targets"]["postgres"].update(target)
    path.write_text(yaml.safe_dump(config))
    return project


def schema_of(project: ProjectHarness) -> str:
    config = yaml.safe_load((project.root / "arpu.yml").read_text())
    return str(config["targets"]["postgres"]["schema"])


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> ProjectHarness:
    """multi_category.ndjson built and published once for the module, with a tiny extra model
    (publish_probe) and `grants: {select: [BI_ROLE]}`."""
    project = postgres_project(tmp_path_factory.mktemp("published") / "project", "publish",
                               grants={"select": [BI_ROLE]}, lock_timeout=LOCK_TIMEOUT,
                               publish_retries=2)
    shutil.copy(PROBES / "publish_probe.sql", project.root / "models/marts/publish_probe.sql")
    with Context(project.root) as ctx:
        ctx.ingest([FIXTURES / "multi_category.ndjson"])
        result = ctx.build(validate=False)
    assert result.success, [(r.model, r.error) for r in result.results if r.error]
    return project


def test_refuses_a_schema_holding_objects_it_did_not_create(tmp_path: Path) -> None:
    """`schema: public` dropped the users' tables there and their views elsewhere (exit 0)."""
    project = postgres_project(tmp_path / "project", "foreign")
    schema, crm = schema_of(project), f"arpu_test_crm_{PID}"
    with pg() as con:
        con.execute(f'create schema "{schema}"')
        con.execute(f'create table "{schema}".customers as select 1 as customer_id')
        con.execute(f'create schema "{crm}"')
        con.execute(f'create view "{crm}".active_customers as select * from "{schema}".customers')
    project.ingest(FIXTURES / "multi_category.ndjson")
    proc = run_arpu(project.root, "run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = error_lines(proc)
    assert schema in line and "customers" in line, line
    with pg() as con:
        assert con.execute(f'select * from "{crm}".active_customers').fetchall() == [(1,)]
        assert con.execute("select relname from pg_class c join pg_namespace n on "
                           "n.oid = c.relnamespace where nspname = %s", [schema]
                           ).fetchall() == [("customers",)]


def test_takes_over_the_tables_an_earlier_arpu_published(tmp_path: Path) -> None:
    """arpu used to publish tables by renaming a schema over `<schema>`, and recorded nothing:
    a schema holding just `arpu_build_info` and tables of the models it lists is arpu's."""
    project = postgres_project(tmp_path / "project", "legacy")
    schema = schema_of(project)
    with pg() as con:
        con.execute(f'create schema "{schema}"')
        con.execute(f'create table "{schema}".fct_orders as select 1 as order_id')
        con.execute(f'create table "{schema}".arpu_build_info as '
                    "select 'fct_orders'::text as model")
    project.ingest(FIXTURES / "multi_category.ndjson")
    proc = run_arpu(project.root, "run")
    assert proc.returncode == 0, proc.stderr
    with pg() as con:
        kinds = con.execute("select distinct relkind::text from pg_class c join pg_namespace n "
                            "on n.oid = c.relnamespace where nspname = %s", [schema]).fetchall()
        assert kinds == [("v",)]
        assert con.execute(f'select count(*) from "{schema}".fct_orders').fetchone() == (2,)


def test_users_views_and_grants_survive_a_publish(published: ProjectHarness) -> None:
    """Each publish dropped the views users made over arpu's relations, and every grant."""
    schema = schema_of(published)
    with pg() as con:
        con.execute(f'create schema "{USERS}"')
        con.execute(f'create view "{USERS}".order_count as '
                    f'select count(*) as orders from "{schema}".fct_orders')
        for sql in (f'grant usage on schema "{USERS}" to "{ANALYST}"',
                    f'grant select on "{USERS}".order_count to "{ANALYST}"',
                    f'grant usage on schema "{schema}" to "{ANALYST}"',
                    f'grant select on "{schema}".fct_product_purchases to "{ANALYST}"'):
            con.execute(sql)
        before = con.execute(f'select orders from "{USERS}".order_count').fetchone()[0]
        tables_before = work_tables(con, schema)
    published.ingest(FIXTURES / "funnel_window.ndjson")
    proc = run_arpu(published.root, "run")
    assert proc.returncode == 0, proc.stderr
    with pg() as con:
        after = con.execute(f'select orders from "{USERS}".order_count').fetchone()[0]
        assert after > before  # the user's view reads the new publish
        relations = [r[0] for r in con.execute(
            "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where nspname = %s and relkind = 'v' order by 1", [schema]).fetchall()]
        assert {"fct_orders", "arpu_build_info", "publish_probe"} <= set(relations)
        # nothing but arpu's views in the published schema, no snapshot left behind
        assert con.execute("select count(*) from pg_class c join pg_namespace n on "
                           "n.oid = c.relnamespace where nspname = %s", [schema]
                           ).fetchone() == (len(relations),)
        assert work_tables(con, schema) == tables_before
        con.execute(f'set role "{ANALYST}"')
        assert con.execute(f'select orders from "{USERS}".order_count').fetchone() == (after,)
        con.execute(f'select count(*) from "{schema}".fct_product_purchases').fetchone()
        con.execute(f'set role "{BI_ROLE}"')  # arpu.yml's grants: every published relation
        for name in relations:
            con.execute(f'select count(*) from "{schema}"."{name}"').fetchone()
        con.execute("reset role")


def work_tables(con: Any, schema: str) -> int:
    return int(con.execute("select count(*) from pg_class c join pg_namespace n on "
                           "n.oid = c.relnamespace where nspname = %s and relkind = 'r'",
                           [f"{schema}__work"]).fetchone()[0])


def test_changed_columns_under_a_users_view_are_refused_in_one_line(
        published: ProjectHarness) -> None:
    """arpu never drops a user's view to publish a model whose columns changed; without one,
    the view is replaced and keeps its grants."""
    schema = schema_of(published)
    probe = published.root / "models/marts/publish_probe.sql"
    with pg() as con:
        con.execute(f'create schema if not exists "{USERS}"')
        con.execute(f'create view "{USERS}".probe_labels as '
                    f'select label from "{schema}".publish_probe')
        con.execute(f'grant select on "{schema}".publish_probe to "{ANALYST}"')
    shutil.copy(PROBES / "publish_probe_reordered.sql", probe)
    proc = run_arpu(published.root, "run", "--select", "publish_probe")
    assert proc.returncode == 1, proc.stderr
    [line] = error_lines(proc)
    assert "publish_probe" in line and f"{USERS}.probe_labels" in line, line
    with pg() as con:
        assert con.execute(f'select * from "{USERS}".probe_labels').fetchall() == [("a",)]
        assert con.execute(f'select * from "{schema}".publish_probe').fetchall() == [(1, "a")]
        con.execute(f'drop view "{USERS}".probe_labels')
    proc = run_arpu(published.root, "run", "--select", "publish_probe")
    assert proc.returncode == 0, proc.stderr
    with pg() as con:
        assert con.execute(f'select * from "{schema}".publish_probe').fetchall() == [("b", 2)]
        assert con.execute("select has_table_privilege(%s, %s, 'select')",
                           [ANALYST, f'"{schema}".publish_probe']).fetchone() == (True,)


class Reader(threading.Thread):
    """A BI session running `loop` until stopped, each run one transaction (REPEATABLE READ, or
    psycopg's default) on one held connection, `pause` seconds apart; records errors,
    inconsistent answers and the longest wait for one statement."""

    def __init__(self, loop: Callable[[Callable[[str], Any]], None],
                 isolation: str | None = None, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.loop, self.isolation, self.pause = loop, isolation, pause
        self.errors: list[str] = []
        self.loops, self.longest = 0, 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, application_name="dashboard",
                             options="-c statement_timeout=60000") as con:
            if self.isolation:
                con.isolation_level = psycopg.IsolationLevel[self.isolation]
            while not self.stopping.is_set():
                try:
                    self.loop(self.timed(con))
                    con.commit()
                    self.loops += 1
                except psycopg.Error as exc:
                    self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    con.rollback()
                except AssertionError as exc:
                    self.errors.append(str(exc))
                    con.rollback()
                time.sleep(self.pause)

    def timed(self, con: Any) -> Callable[[str], Any]:
        def execute(sql: str) -> Any:
            t0 = time.monotonic()
            row = con.execute(sql).fetchone()
            self.longest = max(self.longest, time.monotonic() - t0)
            return row
        return execute

    def stop(self) -> Reader:
        self.stopping.set()
        self.join(90)
        return self


def test_repeatable_read_readers_never_fail_a_build(published: ProjectHarness) -> None:
    """A REPEATABLE READ transaction of a few statements made builds fail with DeadlockDetected
    (4 of 4 in the issue): it held one relation while the publish waited for it, then read one
    the publish had taken. Now every build passes, the reader waits less than a few seconds,
    never fails, and sees one publish per transaction."""
    schema = schema_of(published)
    first = [f'select count(*), sum(product_count) from "{schema}".fct_orders',
             f'select count(*), count(*) from "{schema}".fct_product_purchases']
    others = [f'select count(*) from "{schema}"."{name}"' for name in (
        "arpu_build_info", "category_funnel", "dim_users", "stg_events", "fct_product_views")]
    turn = iter(range(10**9))

    def consistent(execute: Callable[[str], Any]) -> None:
        """Hold fct_orders or fct_product_purchases for a while, then read a few others."""
        held = next(turn) % 2
        results = [execute(first[held])]
        time.sleep(0.5)
        results.append(execute(first[1 - held]))
        for sql in others:
            execute(sql)
        (orders, in_orders), (lines, _) = results[held], results[1 - held]
        assert orders > 0 and lines == in_orders, f"{lines} lines, {in_orders} in {orders} orders"

    reader = Reader(consistent, isolation="REPEATABLE_READ", pause=0.3)
    reader.start()
    try:
        codes = []
        for _ in range(4):
            proc = run_arpu(published.root, "run")
            codes.append((proc.returncode, error_lines(proc)))
    finally:
        reader.stop()
    assert codes == [(0, [])] * 4
    assert reader.errors == [] and reader.loops > 2
    assert reader.longest < LOCK_TIMEOUT + 2


@pytest.mark.slow
def test_an_idle_in_transaction_reader_fails_the_publish_naming_it(
        published: ProjectHarness) -> None:
    """A notebook's idle transaction blocked the publish forever, and every reader behind it;
    now readers wait at most the lock timeout, the build gives up (exit 1) naming the session,
    and the published relations stay as they were."""
    import psycopg

    schema = schema_of(published)
    state = (f"select (select max(built_at) from \"{schema}\".arpu_build_info), "
             f"pg_get_viewdef('\"{schema}\".fct_orders'::regclass)")
    with pg() as con:
        before = con.execute(state).fetchone()
    # autocommit off: the default
    notebook = psycopg.connect(POSTGRES_DSN, application_name="notebook")
    dashboard = Reader(lambda execute: execute(f'select count(*) from "{schema}".fct_orders'))
    try:
        notebook.execute(f'select count(*) from "{schema}".fct_orders').fetchone()
        holder = notebook.info.backend_pid
        dashboard.start()
        t0 = time.monotonic()
        proc = run_arpu(published.root, "run")
        seconds = time.monotonic() - t0
        dashboard.stop()
    finally:
        notebook.close()
    assert proc.returncode == 1, proc.stderr
    [line] = error_lines(proc)
    assert f"pid {holder}" in line and "notebook" in line, line
    assert "idle in transaction" in line, line
    assert seconds < 45
    with pg() as con:
        assert con.execute(state).fetchone() == before
    assert dashboard.errors == [] and dashboard.loops > 10
    assert dashboard.longest < LOCK_TIMEOUT + 2


def test_a_killed_build_stops_its_query_on_the_server(tmp_path: Path) -> None:
    """A build killed during a long query left the query running on the server."""
    project = postgres_project(tmp_path / "project", "killed")
    shutil.copy(PROBES / "slow_probe.sql", project.root / "models/marts/slow_probe.sql")
    schema = schema_of(project)
    env = arpu_env()
    build = subprocess.Popen([sys.executable, "-m", "runner.cli", "-C", str(project.root),
                              "run", "--select", "slow_probe"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    find = ("select pid, application_name from pg_stat_activity where query ilike "
            "'%%pg_sleep%%' and query like %s and pid <> pg_backend_pid()")
    backend = None
    try:
        with pg() as con:
            backend = wait_for(lambda: con.execute(find, [f"%{schema}%"]).fetchone(), 60)
            assert backend is not None, "the slow model never started"
            os.kill(build.pid, signal.SIGKILL)
            build.wait(10)
            t0 = time.monotonic()
            gone = wait_for(lambda: con.execute(
                "select count(*) = 0 from pg_stat_activity where pid = %s", [backend[0]]
            ).fetchone()[0], 15)
            seconds = time.monotonic() - t0
    finally:
        if build.poll() is None:
            build.kill()
        if backend is not None:
            with pg() as con:
                con.execute("select pg_terminate_backend(%s)", [backend[0]])
    assert backend[1] == "arpu"
    assert gone, f"backend {backend[0]} still runs {seconds:.0f} s after its client was killed"
    assert seconds < 10


def wait_for(probe: Callable[[], Any], seconds: float) -> Any:
    """The first truthy value of `probe`, polled until `seconds` have passed (else None)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    return None


def test_a_cross_join_is_never_compiled_by_llvm(published: ProjectHarness) -> None:
    """arpu's connections: nested loops off, and JIT off with them. A nested loop then costs
    over 1e10, past every JIT threshold, so with JIT on the server compiled a cross join of two
    one-row aggregates (each model's checks are one such query) with LLVM: 130-450 ms a query
    on a hundred rows, most of a small build."""
    cross_join = ("explain select * from (select count(*) as a from fct_orders) as x "
                  "cross join (select count(*) as b from fct_orders) as y")
    with Context(published.root) as ctx:
        engine = ctx.engine()
        assert engine.scalar("show enable_nestloop") == "off"
        assert engine.scalar("show jit") == "off"
        plan = "\n".join(row[0] for row in engine.fetch(cross_join)[1])
        assert "Nested Loop" in plan and "JIT" not in plan, plan
        # Great Expectations' own connection (when a check fails) has the same session
        import sqlalchemy

        gx_engine = sqlalchemy.create_engine(engine.sqlalchemy_url)
        with gx_engine.connect() as gx:
            assert [gx.exec_driver_sql(f"show {name}").scalar() for name in
                    ("jit", "enable_nestloop", "timezone")] == ["off", "off", "UTC"]
        gx_engine.dispose()
        engine.execute("set jit = on")  # what a server with LLVM (this one) would do
        if engine.scalar("select pg_jit_available()"):
            plan = "\n".join(row[0] for row in engine.fetch(cross_join)[1])
            assert "JIT" in plan, plan
