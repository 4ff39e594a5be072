"""Fault injection for the crash tests: `ARPU_FAULT=<point>` makes the process kill itself
with SIGKILL when it reaches that point (`publish`: the new file is written but not yet renamed;
`model:<name>`: right after that model is built; `ingest:file`: after each file is
committed; `ingest:chunk`: after a chunk is committed, before its load is recorded).
Unset, it costs one dictionary lookup."""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("ARPU_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
