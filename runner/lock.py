"""One writer at a time per project: a command that writes to the warehouse or to target/
holds `target/arpu.lock` (an advisory lock the system drops when the process ends, even when
it is killed) with its pid in it; a second one exits 2 naming the first instead of meeting
DuckDB's lock error half-way through."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import UsageError

LOCK_FILE = "arpu.lock"


@contextmanager
def project_lock(project_dir: Path, command: str) -> Iterator[None]:
    """Hold the project's lock for the body, or raise UsageError (exit 2) naming the holder.
    Where the system has no flock (Windows), DuckDB's own lock still stops a second writer."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = project_dir / "target" / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{holder(path)} is using this project: wait for it to finish "
                             "or stop it", location=str(project_dir)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} arpu {command}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(path: Path) -> str:
    """`another arpu process (pid 123, arpu build)`, from what the holder wrote."""
    try:
        pid, _, command = path.read_text().strip().partition(" ")
    except OSError:
        pid = command = ""
    return f"another arpu process (pid {pid}, {command})" if pid.isdigit() else \
        "another arpu process"


def duckdb_holder(message: str) -> str | None:
    """DuckDB's 'Could not set lock ... Conflicting lock is held in <program> (PID 123)':
    the pid, when that is the error; None otherwise."""
    if "Could not set lock" not in message and "Conflicting lock" not in message:
        return None
    match = re.search(r"PID (\d+)", message)
    return f"another process (pid {match[1]})" if match else "another process"
