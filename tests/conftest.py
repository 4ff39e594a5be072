"""Shared fixtures: the sample project copied to a temp dir, driven through the Context API;
the projects every module would otherwise build again, built once per session. The helpers
live in tests/support/ (test modules import them from there)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from support import built
from support.built import Built, built_once
from support.project import POSTGRES_DSN, ROOT, SEGMENT_EXAMPLES, ProjectHarness

from runner.seed import PROMO_START


@pytest.fixture
def arpu_project(tmp_path: Path) -> ProjectHarness:
    return ProjectHarness(tmp_path / "project")


@pytest.fixture
def sample_project(tmp_path: Path) -> ProjectHarness:
    return ProjectHarness(tmp_path / "project", with_sample=True)


@pytest.fixture
def segment_examples() -> list[Path]:
    """The reference payloads; missing is a failure in CI and a skip on a laptop."""
    files = sorted(SEGMENT_EXAMPLES.glob("*.json"))
    if not files:
        if os.environ.get("CI"):
            pytest.fail(f"{SEGMENT_EXAMPLES} is missing (set ARPU_SEGMENT_EXAMPLES)")
        pytest.skip(f"{SEGMENT_EXAMPLES} not present")
    return files


@pytest.fixture
def own_postgres_schemas() -> Any:
    """Leave the shared `test` database as it was: the schemas of this process
    (use_isolated_targets names them after the pid; tests run in parallel processes) go when
    the test ends. Modules that build on PostgreSQL use it (pytest.mark.usefixtures)."""
    yield
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as pg:
        schemas = pg.execute("select nspname from pg_namespace where nspname ~ %s",
                             [rf"^arpu_test_.*_{os.getpid()}(__work|__next)?$"]).fetchall()
        for (schema,) in schemas:
            pg.execute(f'drop schema "{schema}" cascade')


# -- built once per session; tests take copies (Built.copy) ---------------------------------
@pytest.fixture(scope="session")
def sample_built_by_cli(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A fresh project after `arpu build`; outcome: (exit code, stdout, stderr)."""
    return built_once(tmp_path_factory, "sample_by_cli", built.sample_by_cli)


@pytest.fixture(scope="session")
def sample_built_by_context(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A fresh project after `Context.build()`; outcome: the BuildResult."""
    return built_once(tmp_path_factory, "sample_by_context", built.sample_by_context)


@pytest.fixture(scope="session")
def sample_built_with_promo(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sample built with the seed's promotion start as `promo_start`."""
    return built_once(tmp_path_factory, "sample_with_promo",
                      partial(built.sample_by_context, promo_start=PROMO_START))


@pytest.fixture(scope="session")
def sample_built_with_metrics(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sample with the recipe's metrics/ (and so the saved queries' exports)."""
    return built_once(tmp_path_factory, "sample_with_metrics", built.sample_with_metrics)


# -- how the two pytest processes share the work (pyproject: -n 2 --dist loadscope) ----------
# A module is one unit of work, so its module fixtures are built once, except in the modules
# below: their tests build their own projects (or copy a session's), so each test is a unit
# and the two processes stay busy to the end. The cross-engine modules' Spark tests are one
# unit: the process that starts Spark (seconds of JVM start-up) runs them all, and builds the
# sample on Spark once for both modules (support/engines.py).
SPREAD = {"test_build_validation.py", "test_clickhouse.py", "test_cli.py", "test_concurrency.py",
          "test_engines.py", "test_first_contact_cli.py", "test_hostile.py",
          "test_incremental.py", "test_metrics_engines.py", "test_metrics_props.py",
          "test_metrics_query.py", "test_publish.py", "test_reference_diff.py",
          "test_reliability.py", "test_sample.py", "test_semantics.py", "test_vars.py"}
SPARK = "spark"
ON_SPARK = {"test_engines.py", "test_metrics_engines.py"}
# The longest units start first (the Spark unit, then about a minute each on a busy machine,
# `--durations`), so neither process is left with one of them when the other has finished.
FIRST = ["test_incremental.py::test_split_ingest_equals_one_build",
         "test_reference_diff.py::test_random_streams_match_reference",
         "test_hostile.py::test_password_never_leaks",
         "test_concurrency.py::test_concurrent_build_equals_one_by_one",
         "test_first_contact.py", "test_validate.py", "test_dashboard.py"]


def _unit(nodeid: str) -> str:
    path, _, test = nodeid.partition("::")
    name = path.rsplit("/", 1)[-1]
    if name in ON_SPARK and SPARK in test:
        return SPARK
    return nodeid if name in SPREAD else path


def _first(nodeid: str) -> int:
    if _unit(nodeid) == SPARK:
        return -1
    after_tests = nodeid.split("/", 1)[-1]
    return next((i for i, key in enumerate(FIRST) if after_tests.startswith(key)), len(FIRST))


RAM_DISK = Path("/dev/shm")
RAM_DISK_FREE = 8 << 30  # a session writes about 3.5 GB of projects


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package's bytecode once, before any process starts (what `pip install`
    does for a wheel): an editable checkout run under PYTHONDONTWRITEBYTECODE (CI, this
    machine) would compile every module again in each `arpu` the tests start, 0.3 s each.

    And the session's temp files go to the RAM disk where there is one with room (unless
    TMPDIR or --basetemp says where): the tests' thousands of DuckDB commits each wait for
    the disk (fsync) otherwise, 15% of a DuckDB-bound test. The files are real files all the
    same; only a power cut would tell the difference, and no test cuts the power."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import compileall

    compileall.compile_dir(str(ROOT / "runner"), quiet=1)
    if config.option.basetemp or os.environ.get("TMPDIR") or not os.access(RAM_DISK, os.W_OK):
        return
    import shutil
    import tempfile

    if shutil.disk_usage(RAM_DISK).free >= RAM_DISK_FREE:
        os.environ["TMPDIR"] = str(RAM_DISK)  # the workers and every process they start
        tempfile.tempdir = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects; all sort alike
        items.sort(key=lambda item: _first(item.nodeid))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        """loadscope with the units above, in collection order (--no-loadscope-reorder)."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return Units(config, log)
