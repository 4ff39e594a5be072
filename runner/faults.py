"""Fault injection for the crash tests: `ARPU_FAULT=<point>` makes the process kill itself
with SIGKILL when it reaches that point (`publish`: the new file is written but not yet renamed;
`published`: just renamed; `model:<name>`: right after that model is built; `ingest:file`: after
each file is committed (a batch of small files: all of them at once); `ingest:chunk`: after a
chunk is committed, before its load is recorded; `begin_build:copied`: the published file is
copied for a build, before the copy is attached). `ARPU_INTERRUPT=<point>` sends SIGINT
instead, as a user's Ctrl-C at that moment would. Unset, each costs one dictionary lookup."""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("ARPU_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("ARPU_INTERRUPT") == name:
        os.kill(os.getpid(), signal.SIGINT)
