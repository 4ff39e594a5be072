"""Projects built once per test session. Building the sample takes seconds; many modules only
read it, or change it after the build. The first pytest process (xdist worker) that needs a
project builds it under a lock in the session's shared temp folder; the others wait for it,
and every module or test gets its own copy of the built folder (`ProjectHarness.copy_of`)."""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .project import ROOT, ProjectHarness, run_arpu

Build = Callable[[Path], Any]  # builds the project at a folder; returns what tests may check


@dataclass(frozen=True)
class Built:
    """A project built once for the session, and what its build returned. Tests read and
    change copies of it (`copy`), never the project itself: other processes copy it too."""

    project: ProjectHarness
    outcome: Any

    def copy(self, root: Path) -> ProjectHarness:
        return self.project.copy(root)


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base temp folder every process of this session shares (xdist gives each worker a
    folder of its own under it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


_read: dict[str, Built] = {}  # what this process has unpickled (the sample's relations: 34 MB)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Build) -> Built:
    """The project `name` as `build` left it, and what `build` returned; built by the first
    process to ask. A build that raised is tried again by the next process that asks. The
    outcome is read once per process: tests only read it."""
    if name in _read:
        return _read[name]
    folder = session_folder(tmp_path_factory) / "built"
    folder.mkdir(exist_ok=True)
    root, outcome = folder / name, folder / f"{name}.pickle"
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not outcome.exists():
            shutil.rmtree(root, ignore_errors=True)
            outcome.write_bytes(pickle.dumps(build(root)))
    _read[name] = Built(ProjectHarness.existing(root), pickle.loads(outcome.read_bytes()))
    return _read[name]


def sample_by_cli(root: Path) -> tuple[int, str, str]:
    """A fresh project built by `arpu build` (the sample loads itself): exit code and output."""
    ProjectHarness(root, with_sample=True)
    done = run_arpu(root, "build")
    return done.returncode, done.stdout, done.stderr


def sample_by_context(root: Path, **vars: Any) -> Any:
    """A fresh project built through the Context API with `vars`: the BuildResult."""
    return ProjectHarness(root, with_sample=True).build(**vars)


def sample_with_metrics(root: Path, **vars: Any) -> Any:
    """The sample with the recipe's metrics (metrics/) built with `vars` (the build also
    writes the saved queries' exports): the BuildResult."""
    project = ProjectHarness(root, with_sample=True)
    shutil.copytree(ROOT / "metrics", root / "metrics")
    return project.build(**vars)
