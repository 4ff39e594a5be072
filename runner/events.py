"""What a build or test reports while it runs, as typed events: the terminal's progress
(runner/report.py) and tests listen to them; the build never knows who listens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.artifacts import ModelResult
    from runner.ingest import IngestResult


@dataclass(frozen=True)
class ModelStarted:
    """A model (or a saved query's export) starts running."""

    model: str


@dataclass(frozen=True)
class ModelFinished:
    """A model ran (and was validated), failed, or was skipped: `result.status` says which."""

    result: ModelResult

    @property
    def model(self) -> str:
        return self.result.model


@dataclass(frozen=True)
class SampleLoaded:
    """A fresh project's first build loaded the bundled sample from `path`."""

    path: str
    result: IngestResult


@dataclass(frozen=True)
class SourceFilesLoaded:
    """A build loaded the files of `source.path` (`pattern`) that no load had read (and
    removed `sample_removed` messages of the bundled sample loaded earlier)."""

    pattern: str
    result: IngestResult
    sample_removed: int = 0


@dataclass(frozen=True)
class UnfinishedLoadsDiscarded:
    """Rows of an ingest that was stopped before it recorded its load were removed."""

    rows: int


BuildEvent = (ModelStarted | ModelFinished | SampleLoaded | SourceFilesLoaded
              | UnfinishedLoadsDiscarded)
Listener = Callable[[BuildEvent], None]


def ignore(event: BuildEvent) -> None:
    """The listener of a build nobody watches."""
