"""What every benchmark shares: timed subprocesses (wall, CPU, peak RSS), a fresh copy of the
project, a disk-usage watcher, medians and the units the reports print."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PARTS = ("models", "macros", "arpu.yml")


@dataclass
class Proc:
    """One finished subprocess: exit code, wall seconds, CPU seconds (user + sys, the figure that
    moves least when others share the cores), peak RSS in bytes, log file."""

    returncode: int
    seconds: float
    max_rss: int
    log: Path
    cpu_s: float = 0.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None) -> Proc:
    """Run cmd with output to log_path; wall time and this child's own peak RSS (wait4)."""
    with log_path.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Proc(proc.returncode, seconds, usage.ru_maxrss * 1024, log_path,
                usage.ru_utime + usage.ru_stime)


def arpu(args: list[str], cwd: Path, log_path: Path, check: bool = True) -> Proc:
    proc = run([sys.executable, "-m", "runner.cli", *args], cwd, log_path)
    if check and proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise SystemExit(f"arpu {' '.join(args)} failed ({proc.returncode}) in {cwd}:\n{tail}")
    return proc


def copy_project(dest: Path, with_seeds: bool = False, memory_limit: str | None = None
                 ) -> Path:
    """A fresh project in dest: nothing ingested, nothing built (memory_limit: set in its
    `targets.duckdb`; None keeps the project's default settings)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for part in (*PROJECT_PARTS, *(("seeds",) if with_seeds else ())):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        else:
            shutil.copy2(src, dest / part)
    if memory_limit:
        config = dest / "arpu.yml"
        text = config.read_text()
        anchor = "    path: arpu.duckdb\n"
        if anchor not in text:
            raise SystemExit("arpu.yml: no `path: arpu.duckdb` under targets.duckdb")
        config.write_text(text.replace(anchor, f"{anchor}    memory_limit: {memory_limit}\n", 1))
    return dest


def seed(events: int, out: Path, project: Path, log_path: Path, seed_no: int = 42) -> Proc:
    """`arpu seed --no-load`: events messages (gzip when out ends in .gz), same bytes per seed."""
    return arpu(["seed", "--events", str(events), "--seed", str(seed_no), "--out", str(out),
                 "--no-load"], project, log_path)


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))


def disk_bytes(folder: Path) -> int:
    """Bytes the files under folder take on disk (allocated blocks, not apparent sizes)."""
    total = 0
    for path, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(path, name)).st_blocks * 512
            except FileNotFoundError:  # a temporary file went while we walked
                pass
    return total


class DiskWatch:
    """The most disk a folder took while the `with` block ran, sampled every `every` seconds in
    a thread (DuckDB's spill files come and go within one build)."""

    def __init__(self, folder: Path, every: float = 1.0) -> None:
        self.folder, self.every, self.peak = folder, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, disk_bytes(self.folder))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, disk_bytes(self.folder))


def median(values: Iterable[Any]) -> float:
    return statistics.median(float(v or 0.0) for v in values)


def gb(n: float) -> str:
    return f"{n / 10**9:.2f} GB"


def mb(n: float) -> str:
    return f"{n / 10**6:,.0f} MB"


def human(n: int) -> str:
    return f"{n / 10**6:g}M" if n >= 10**6 else f"{n / 10**3:g}k"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


Check = tuple[str, str, bool | None]  # target, figure, verdict (None: not measured at its size)
