"""Sizes too big for the floor's comparison (100M events): seed, ingest and build once, end to end,
under the benchmark's memory_limit, with the disk the project takes watched throughout.

The floor needs two more copies of the work database (the state after ingest, and the floor's
own), which at 100M events would triple the disk; here the seed is written gzip-compressed
(`arpu seed --out events.ndjson.gz`: about a fifth of the NDJSON) and deleted once ingested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import Check, DiskWatch, Proc, arpu, copy_project, gb, human, log, seed

TARGET_EVENTS = 100_000_000  # the target is set at 100M events; smaller sizes are n/a
DISK_MAX_BYTES = 40 * 10**9


@dataclass
class ScaleResult:
    events: int
    file_bytes: int
    seed: Proc
    ingest: Proc
    build: Proc
    disk_peak: int

    @property
    def end_to_end_s(self) -> float:
        return self.ingest.seconds + self.build.seconds


def bench_scale(events: int, workdir: Path, memory_limit: str | None) -> ScaleResult:
    project = copy_project(workdir / f"scale-{events}", memory_limit=memory_limit)
    logs = project / "bench-logs"
    logs.mkdir()
    data = project / "events.ndjson.gz"
    log(f"{events:,} events, end to end only: seed -> {data} (disk watched)")
    with DiskWatch(project) as disk:
        seeded = seed(events, data, project, logs / "seed.log")
        file_bytes = data.stat().st_size
        log(f"  seeded in {seeded.seconds:.1f} s ({gb(file_bytes)} gzip, peak RSS "
            f"{gb(seeded.max_rss)}); ingest")
        ingest = arpu(["ingest", str(data)], project, logs / "ingest.log")
        data.unlink()
        log(f"  ingested in {ingest.seconds:.1f} s; build")
        build = arpu(["build"], project, logs / "build.log")
    res = ScaleResult(events, file_bytes, seeded, ingest, build, disk.peak)
    log(f"  built in {build.seconds:.1f} s; peak RSS {gb(max(ingest.max_rss, build.max_rss))}, "
        f"peak disk {gb(disk.peak)}")
    for db in project.glob("*.duckdb"):
        db.unlink()
    return res


def scale_checks(results: list[ScaleResult], failures: dict[int, str],
                 memory_limit: str | None) -> list[Check]:
    checks: list[Check] = []
    for r in results:
        applies = r.events >= TARGET_EVENTS
        checks.append((f"{human(r.events)} events ingest + build complete, memory_limit "
                       f"{memory_limit or 'default'}", f"{r.end_to_end_s:.0f} s",
                       True if applies else None))
        checks.append((f"{human(r.events)} events peak disk < 40 GB", gb(r.disk_peak),
                       r.disk_peak < DISK_MAX_BYTES if applies else None))
    for events, why in failures.items():
        checks.append((f"{human(events)} events ingest + build complete", why, False))
    return checks


def scale_lines(results: list[ScaleResult], memory_limit: str | None) -> list[str]:
    lines = [
        "## End to end at scale",
        "",
        "`arpu seed` (gzip), `arpu ingest`, `arpu build` once each in a fresh project with "
        f"memory_limit {memory_limit or 'DuckDB default'}; the seed's file is deleted once "
        "ingested; peak disk is the most the project folder took at any second (work and "
        "published databases, DuckDB's spill files, the file while it exists).",
        "",
        "| events | seed s | seed peak RSS | gzip file | ingest s | build s | ingest + build s | "
        "peak RSS ingest | peak RSS build | peak disk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {human(r.events)} | {r.seed.seconds:.1f} | {gb(r.seed.max_rss)} | "
                     f"{gb(r.file_bytes)} | "
                     f"{r.ingest.seconds:.1f} | {r.build.seconds:.1f} | {r.end_to_end_s:.1f} | "
                     f"{gb(r.ingest.max_rss)} | {gb(r.build.max_rss)} | {gb(r.disk_peak)} |")
    return [*lines, ""]
