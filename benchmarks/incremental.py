"""An incremental build after 1% new events against the full build before it.

`arpu seed` writes its messages in event-time order (the bad lines last), so the seed of
N + 1% events cut after line N gives what a daily load brings: the newest 1% of the messages,
with ids of their own, the same users and orders continuing. (A second seed with another
`--seed` would not do: its userIds and order_ids are the first seed's again.) Ingest the first N,
`arpu build` (nothing built before: the full build), ingest the rest, `arpu build` again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import Check, Proc, arpu, copy_project, count_lines, gb, human, log, seed

INCREMENT = 0.01
RATIO_MAX = 0.10
TARGET_MIN_EVENTS = 2_000_000  # the target is set at 2M and 10M events; smaller sizes are n/a


@dataclass
class IncrementalResult:
    events: int
    increment_lines: int
    seed: Proc
    ingest: Proc
    full: Proc
    increment_ingest: Proc
    increment: Proc

    @property
    def ratio(self) -> float:
        return self.increment.seconds / self.full.seconds


def split_after(path: Path, lines: int, tail: Path) -> int:
    """Move everything after the first `lines` lines of path into tail; its line count."""
    with path.open("rb") as fh:
        seen = 0
        while block := fh.read(1 << 24):
            if seen + block.count(b"\n") >= lines:
                cut = -1
                for _ in range(lines - seen):
                    cut = block.index(b"\n", cut + 1)
                offset = fh.tell() - len(block) + cut + 1
                break
            seen += block.count(b"\n")
        else:
            raise SystemExit(f"{path}: fewer than {lines:,} lines")
        fh.seek(offset)
        with tail.open("wb") as out:
            shutil.copyfileobj(fh, out, 1 << 24)
    os.truncate(path, offset)
    return count_lines(tail)


def bench_incremental(events: int, workdir: Path, memory_limit: str | None
                      ) -> IncrementalResult:
    project = copy_project(workdir / f"incremental-{events}", memory_limit=memory_limit)
    logs = project / "bench-logs"
    logs.mkdir()
    base, newest = project / "events.ndjson", project / "newest.ndjson"
    log(f"incremental at {events:,} events: seed {events + round(events * INCREMENT):,}, "
        f"cut after line {events:,}")
    seeded = seed(events + round(events * INCREMENT), base, project, logs / "seed.log")
    increment_lines = split_after(base, events, newest)
    log(f"  seeded in {seeded.seconds:.1f} s (peak RSS {gb(seeded.max_rss)})")
    ingest = arpu(["ingest", str(base)], project, logs / "ingest.log")
    full = arpu(["build"], project, logs / "build-full.log")
    log(f"  ingest {ingest.seconds:.1f} s, full build {full.seconds:.1f} s; "
        f"+{increment_lines:,} lines")
    increment_ingest = arpu(["ingest", str(newest)], project, logs / "ingest-increment.log")
    increment = arpu(["build"], project, logs / "build-increment.log")
    res = IncrementalResult(events, increment_lines, seeded, ingest, full, increment_ingest,
                            increment)
    log(f"  ingest {increment_ingest.seconds:.1f} s, incremental build {increment.seconds:.1f} s:"
        f" {res.ratio:.1%} of the full build")
    shutil.rmtree(project)
    return res


def incremental_checks(results: list[IncrementalResult]) -> list[Check]:
    return [(f"incremental build after +1% <= {RATIO_MAX:.0%} of a full build, "
             f"{human(r.events)}", f"{r.ratio:.1%}",
             r.ratio <= RATIO_MAX if r.events >= TARGET_MIN_EVENTS else None) for r in results]


def incremental_lines(results: list[IncrementalResult], memory_limit: str | None) -> list[str]:
    lines = [
        "## Incremental build after +1% new events",
        "",
        "`arpu seed` of N + 1% events, cut after line N (the seed writes in event-time order): "
        "ingest the first N, `arpu build` (nothing built before: the full build), ingest the "
        "newest 1% (and the seed's few bad lines), `arpu build` again. One run each, wall "
        f"clock of the whole process, memory_limit {memory_limit or 'DuckDB default'}.",
        "",
        "| events | ingest s | full build s | + lines | their ingest s | incremental build s "
        "| incremental / full | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rss = max(p.max_rss for p in (r.ingest, r.full, r.increment_ingest, r.increment))
        lines.append(f"| {human(r.events)} | {r.ingest.seconds:.2f} | {r.full.seconds:.2f} | "
                     f"{r.increment_lines:,} | {r.increment_ingest.seconds:.2f} | "
                     f"{r.increment.seconds:.2f} | {r.ratio:.1%} | {gb(rss)} |")
    return [*lines, ""]
