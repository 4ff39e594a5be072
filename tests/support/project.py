"""A project copied to a temp folder and driven through the Context API or the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from runner.artifacts import BuildResult
from runner.context import Context
from runner.engines.base import Engine
from runner.ingest import IngestResult

from .zygote import run_cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# Segment's and Mixpanel's published payloads, in shared/ beside the project (CI has it there).
SEGMENT_EXAMPLES = Path(
    os.environ.get("ARPU_SEGMENT_EXAMPLES", ROOT.parent / "shared/reference/segment_examples"))


class ProjectHarness:
    """A fresh copy of the project (models, macros, arpu.yml) with its own DuckDB file."""

    def __init__(self, root: Path, with_sample: bool = False) -> None:
        self.root = root
        for folder in ("models", "macros"):
            shutil.copytree(ROOT / folder, root / folder)
        shutil.copy(ROOT / "arpu.yml", root / "arpu.yml")
        if with_sample:
            shutil.copytree(ROOT / "seeds", root / "seeds")

    @classmethod
    def existing(cls, root: Path) -> ProjectHarness:
        """The project already at `root`."""
        project = cls.__new__(cls)
        project.root = root
        return project

    def copy(self, root: Path) -> ProjectHarness:
        """This whole folder (its data and published files too) at `root`: a test that changes
        a built project starts from its own copy instead of building again."""
        shutil.copytree(self.root, root, symlinks=True)
        return ProjectHarness.existing(root)

    def context(self, **vars: Any) -> Context:
        return Context(self.root, vars=vars or None)

    def ingest(self, *paths: Path | str) -> IngestResult:
        with self.context() as ctx:
            return ctx.ingest(list(paths))

    def build(self, select: list[str] | None = None, **vars: Any) -> BuildResult:
        with self.context(**vars) as ctx:
            return ctx.build(select)

    def rows(self, relation: str, order_by: str | None = None) -> list[dict[str, Any]]:
        with self.context() as ctx:
            return ctx.rows(relation, order_by)

    def scalar(self, sql: str) -> Any:
        with self.context() as ctx:
            return ctx.engine().scalar(sql)


def scratch_build(ctx: Context) -> Engine:
    """The target as a build sees it: raw tables and every published model on one connection,
    in a scratch copy that is dropped unpublished when `ctx` closes."""
    engine = ctx.engine()
    engine.begin_build(carry=list(ctx.compiler().graph.order), incremental=[])
    return engine


POSTGRES_DSN = "host=127.0.0.1 user=postgres dbname=test"  # the server the tests use


def drop_postgres_schemas(schema: str) -> None:
    """A PostgreSQL target's published schema and the two a build works in, if there."""
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as pg:
        for name in (schema, f"{schema}__work", f"{schema}__next"):
            pg.execute(f'drop schema if exists "{name}" cascade')


def use_isolated_targets(project: ProjectHarness, name: str) -> None:
    """Point the postgres and spark targets of a project copy at their own schema/database."""
    path = project.root / "arpu.yml"
    config = yaml.safe_load(path.read_text())
    config["targets"]["postgres"]["schema"] = f"arpu_test_{name}_{os.getpid()}"
    config["targets"]["spark"]["database"] = f"arpu_test_{name}_{os.getpid()}"
    path.write_text(yaml.safe_dump(config))


def run_arpu(project: Path, *args: str, fault: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`arpu -C project args...` in a process of its own, as a user runs it (forked from one
    that has imported arpu: support/zygote.py); `fault` sets ARPU_FAULT (runner/faults.py) to
    kill the process at that point."""
    return run_cli(["-C", str(project), *args], os.getcwd(), arpu_env(env, fault), timeout=300)


def arpu_env(env: dict[str, str] | None = None, fault: str | None = None) -> dict[str, str]:
    """The environment an `arpu` a test starts gets: this one with `env`, and no fault unless
    `fault` names one (runner/faults.py)."""
    environment = {k: v for k, v in os.environ.items() if k != "ARPU_FAULT"}
    environment.update(env or {})
    if fault:
        environment["ARPU_FAULT"] = fault
    return environment
