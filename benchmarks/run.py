"""Benchmark arpu: `arpu build` against its floor (the same compiled SQL run directly in
DuckDB), end to end beside a dbt peer, incremental builds, and 100M events.

Usage:
    python benchmarks/run.py [--sizes 1000000 5000000 20000000] [--workdir /tmp/arpu-bench]
                             [--memory-limit 4GB] [--out benchmarks/results.md]
                             [--peer [--peer-file big.ndjson] [--dbt PATH]]
                             [--incremental 2000000 10000000] [--floor-below 50000000]

For each size below `--floor-below`: copy the project (models/, macros/, arpu.yml) into a fresh
directory, generate N Segment messages (`arpu seed --no-load`, plain NDJSON), `arpu ingest` them,
keep a copy of the work database as it was before the build, time `arpu build` (wall clock and
peak RSS of the process), then run the compiled SQL of every model (target/compiled/duckdb,
manifest order) on the copy in one plain DuckDB process: the floor (`floor.py`). Both run
with DuckDB's memory_limit set to `--memory-limit` (the project's `targets.duckdb.memory_limit`),
so larger data spills to DuckDB's temp directory instead of growing the process. Sizes from
`--floor-below` (100M) run seed, ingest and build once, with the disk watched (`scale.py`).
`--peer`: ingest + build against the dbt-core + dbt-duckdb peer on the 2M-line file, and ingest
throughput, plain and gzip (`peer.py`). `--incremental N...`: a build after 1% new events
against the full build (`incremental.py`). Also times `arpu --help`, `arpu ls` and a build of
the bundled sample, checks the targets below, writes a markdown report and exits 1 on any miss.

Targets (a target whose size was not run is n/a, not a miss):
    arpu --help < 0.3 s; build / floor <= 1.10 at >= 5M events; growth per doubling <= 2.2;
    peak RSS < 6 GB at >= 20M events; `arpu build` of the bundled sample < 3 s;
    on the 2M-line file: ingest + build >= 2.5x faster than the dbt peer, ingest >= 150 MB/s
    (plain and gzip), peak RSS of ingest + build <= 1 GB with default settings;
    incremental build after +1% <= 10% of a full build from 2M events;
    100M events: ingest + build complete under the memory limit, peak disk < 40 GB.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from floor import FUNNEL_MODEL, SizeResult, bench_size, growth, size_table
from harness import ROOT, Check, arpu, copy_project, gb, human, log, verdict
from incremental import IncrementalResult, bench_incremental, incremental_checks, incremental_lines
from peer import PeerResult, bench_peer, check_dbt, peer_checks, peer_lines
from scale import ScaleResult, bench_scale, scale_checks, scale_lines

HELP_MAX_S = 0.3
RATIO_MAX = 1.10
RATIO_MIN_EVENTS = 5_000_000
GROWTH_MAX = 2.2
RSS_MAX_BYTES = 6 * 10**9
RSS_MIN_EVENTS = 20_000_000
SAMPLE_MAX_S = 3.0
SMALL_FILES = 1_000  # the bundled sample dealt out into this many gzip files
REPEAT_BELOW_EVENTS = 10_000_000
SCALE_FROM_EVENTS = 50_000_000

Section = tuple[list[str], list[Check]]  # a report's section: its lines, its targets


def latency(args: list[str], cwd: Path, runs: int = 10) -> float:
    times = [arpu(args, cwd, cwd / "latency.log").seconds for _ in range(runs)]
    return statistics.median(times)


def sample_build(workdir: Path, runs: int = 5) -> tuple[float, Path]:
    """Median wall time of `arpu build` on a fresh copy of the project with the bundled sample."""
    times = []
    project = workdir / "sample"
    for _ in range(runs):
        copy_project(project, with_seeds=True)
        times.append(arpu(["build"], project, project / "build.log").seconds)
    return statistics.median(times), project


def small_files_ingest(workdir: Path) -> float:
    """Wall time of `arpu ingest` of a folder of SMALL_FILES gzip files, the bundled sample's
    lines dealt out in order (as Segment's S3 destination writes a file per batch of events),
    in a fresh project."""
    folder = workdir / "small_files"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with gzip.open(ROOT / "seeds" / "sample_events.ndjson.gz", "rb") as sample:
        lines = sample.read().splitlines(keepends=True)
    per = -(-len(lines) // SMALL_FILES)
    for i in range(SMALL_FILES):  # named as Segment names them: <timestamp>.<id>.gz
        (folder / f"{1765065600000 + 60_000 * i}.{i:08x}-5e6d-4c3b.gz").write_bytes(
            gzip.compress(b"".join(lines[i * per:(i + 1) * per]), 1))
    project = copy_project(workdir / "small_files_project")
    proc = arpu(["ingest", str(folder)], project, project / "ingest.log")
    read = f"Total: {sum(1 for line in lines if line.strip()):,} lines read"
    if read not in proc.log.read_text():
        raise SystemExit(f"small files: the ingest did not say {read!r}")
    return proc.seconds


def machine() -> dict[str, str]:
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    versions = {}
    for pkg in ("duckdb", "sqlglot", "arpu"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "?"
    return {"cores": str(os.cpu_count()), "memory": mem, "python": platform.python_version(),
            **versions}


def calibrate() -> dict[str, float]:
    """This machine's speed, beside the absolute targets (--help, the sample): a bare Python
    start-up (median of 10) and 10M iterations of a Python loop (median of 3), one core."""
    starts = []
    for _ in range(10):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        starts.append(time.perf_counter() - t0)
    loops = []
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        loops.append(time.perf_counter() - t0)
    return {"python_start": statistics.median(starts), "loop": statistics.median(loops)}


def report(results: list[SizeResult], help_s: float, ls_s: float, sample_s: float,
           small_s: float, failures: dict[int, str], memory_limit: str | None,
           speed: dict[str, float], command: str, sections: list[Section]
           ) -> tuple[list[str], bool]:
    checks: list[Check] = [
        ("`arpu --help` < 0.3 s", f"{help_s:.3f} s", help_s < HELP_MAX_S),
        ("bundled sample `arpu build` < 3 s", f"{sample_s:.2f} s", sample_s < SAMPLE_MAX_S),
    ]
    for events, why in failures.items():
        checks.append((f"{human(events)} events run end to end", why, False))
    big = [r for r in results if r.events >= RATIO_MIN_EVENTS]
    for r in big:
        checks.append((f"build / floor <= {RATIO_MAX} at {human(r.events)}", f"{r.ratio:.2f}",
                       r.ratio <= RATIO_MAX))
    if not big and not any(e >= RATIO_MIN_EVENTS for e in failures):
        checks.append((f"build / floor <= {RATIO_MAX} at >= 5M", "no size >= 5M run", None))
    huge = [r for r in results if r.events >= RSS_MIN_EVENTS]
    for r in huge:
        checks.append((f"peak RSS < 6 GB at {human(r.events)}", gb(r.build_rss),
                       r.build_rss < RSS_MAX_BYTES))
    if not huge and not any(e >= RSS_MIN_EVENTS for e in failures):
        checks.append(("peak RSS < 6 GB at 20M", "no size >= 20M run", None))

    growth_rows = []
    for a, b in zip(results, results[1:], strict=False):
        # the target: the funnel's SQL alone in its own process; beside it, its seconds in the
        # floor (after the models before it) and in the build (sharing the cores)
        gf = growth(a.funnel_alone_s or 1e-9, b.funnel_alone_s, a.events, b.events)
        gf_floor = growth(a.floor_model_s.get(FUNNEL_MODEL, 0.0) or 1e-9,
                          b.floor_model_s.get(FUNNEL_MODEL, 0.0), a.events, b.events)
        gf_build = growth(a.model_s.get(FUNNEL_MODEL, 0.0) or 1e-9,
                          b.model_s.get(FUNNEL_MODEL, 0.0), a.events, b.events)
        gbuild = growth(a.build_s, b.build_s, a.events, b.events)
        pair = f"{human(a.events)} → {human(b.events)}"
        growth_rows.append(f"| {pair} | {b.events / a.events:g} | {gf:.2f} | {gf_floor:.2f} | "
                           f"{gf_build:.2f} | {gbuild:.2f} |")
        checks.append((f"growth per doubling <= {GROWTH_MAX}, {FUNNEL_MODEL}, {pair}",
                       f"{gf:.2f}", gf <= GROWTH_MAX))
        checks.append((f"growth per doubling <= {GROWTH_MAX}, whole build, {pair}",
                       f"{gbuild:.2f}", gbuild <= GROWTH_MAX))
    if not growth_rows:
        checks.append(("growth per doubling <= 2.2", "needs two sizes", None))

    m = machine()
    lines = [
        "# arpu benchmarks",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {m['cores']} cores, {m['memory']} memory, {platform.system()} "
        f"{platform.machine()}; Python {m['python']}, duckdb {m['duckdb']}, "
        f"sqlglot {m['sqlglot']}, arpu {m['arpu']}. Speed, for the absolute targets: "
        f"`python -c pass` {speed['python_start']:.3f} s (median of 10), a 10M-iteration "
        f"Python loop {speed['loop']:.2f} s (median of 3).",
        "",
        "The *floor* is the same compiled SQL (`target/compiled/duckdb/*.sql`, manifest order) run "
        "as `create or replace table` with the duckdb Python API in one Python process on a copy "
        "of the "
        "work database taken after ingest, before the build: no runner, no validation, no "
        "publish, no incremental bookkeeping, and the same DuckDB memory_limit "
        f"({memory_limit or 'DuckDB default'}) as the build. Both are timed as the wall clock of "
        "their whole process (Python start-up included; the floor imports only duckdb); peak RSS "
        "is the process's maximum resident set (wait4). The runner's bytecode is compiled "
        "first, as `pip install` does. The build runs models that do not depend "
        "on each other at once (`concurrency`, default: the cores), so its per-model seconds "
        "overlap; the floor runs them one by one, as written.",
        "",
    ]
    for section_lines, section_checks in sections:
        lines += section_lines
        checks += section_checks
    if results:
        lines += [
            "## arpu build beside its floor",
            "",
            "| size | build s | floor s | build / floor | (build − val − pub) / floor | "
            "validation share | publish share | peak RSS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in results:
        lines.append(
            f"| {human(r.events)} | {r.build_s:.2f} | {r.floor_s:.2f} | {r.ratio:.2f} | "
            f"{r.core_s / r.floor_s:.2f} | {r.validation_s / r.elapsed_s:.1%} | "
            f"{r.publish_s / r.elapsed_s:.1%} | {gb(r.build_rss)} |")
    lines += ["", f"Latency (median of 10, wall clock): `arpu --help` {help_s:.3f} s, "
              f"`arpu ls` {ls_s:.3f} s. Bundled sample `arpu build` (fresh copy, median of 5): "
              f"{sample_s:.2f} s. `arpu ingest` of a folder of {SMALL_FILES:,} small gzip files "
              f"(the sample's lines dealt out in order): {small_s:.2f} s.", ""]
    if growth_rows:
        lines += ["## Growth per doubling", "",
                  "(time ratio between consecutive sizes) ** (1 / log2(size ratio))", "",
                  f"| sizes | size ratio | {FUNNEL_MODEL} alone | {FUNNEL_MODEL} in the floor | "
                  f"{FUNNEL_MODEL} in the build | whole build |",
                  "|---|---:|---:|---:|---:|---:|", *growth_rows, "",
                  f"`{FUNNEL_MODEL} alone` is its compiled SQL run by plain DuckDB in a process "
                  "of its own, on the tables the floor built (median of the runs): the target. "
                  "In the floor it runs after the models before it, in a buffer pool they "
                  "filled; in the build it also shares the cores with models built beside it "
                  "(`concurrency`).", ""]
    lines += ["## Targets", "", "| target | figure | result |", "|---|---:|---|"]
    lines += [f"| {name} | {fig} | {verdict(ok)} |" for name, fig, ok in checks]
    if results:
        lines += ["", "## Per size", ""]
    for r in results:
        lines += [*size_table(r), ""]
    missed = any(ok is False for _, _, ok in checks)
    return lines, missed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000, 20_000_000],
                        help="Events per size (`--sizes` alone: none).")
    parser.add_argument("--floor-below", type=int, default=SCALE_FROM_EVENTS,
                        help="Sizes from this many events run end to end once, without the "
                             "floor, their disk watched (default: 50M).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpu-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--memory-limit", default="4GB",
                        help="DuckDB memory_limit for the sizes, the floor and the incremental "
                             "builds ('' for DuckDB's default, 80%% of RAM); the peer comparison "
                             "keeps the project's default settings.")
    parser.add_argument("--repeat", type=int, default=0,
                        help="Runs of the build and of the floor per size, alternating; medians "
                             "are reported (default: 3 below 10M events, 1 from 10M).")
    parser.add_argument("--peer", action="store_true",
                        help="Ingest + build beside the dbt peer; ingest MB/s, plain and gzip.")
    parser.add_argument("--peer-dir", type=Path, default=ROOT.parent / "shared" / "peers" /
                        "dbt_arpu", help="The peer project (copied before use).")
    parser.add_argument("--dbt", type=Path,
                        default=Path(os.environ.get("DBT") or ROOT.parent / "peer-venv" / "bin" /
                                     "dbt"), help="dbt executable (default: $DBT, else "
                                                  "../peer-venv/bin/dbt).")
    parser.add_argument("--peer-file", type=Path,
                        help="NDJSON file for --peer (default: made in the workdir, "
                             "--peer-base-events seeded and --peer-copies times over).")
    parser.add_argument("--peer-base-events", type=int, default=29_300)
    parser.add_argument("--peer-copies", type=int, default=69)
    parser.add_argument("--pairs", type=int, default=3,
                        help="arpu / peer pairs, alternating (and gzip ingest runs).")
    parser.add_argument("--incremental", type=int, nargs="*", default=[],
                        help="Events at which to time a build after +1%% new events.")
    parser.add_argument("--report-only", action="store_true",
                        help="Exit 0 on a missed target (CI: the script must run, not gate).")
    return parser.parse_args(argv)


def first_line(exc: SystemExit) -> str:
    return str(exc).strip().splitlines()[0].replace("|", "/")


def floor_sizes(sizes: list[int], workdir: Path, memory_limit: str | None, repeat: int
                ) -> tuple[list[SizeResult], dict[int, str]]:
    results: list[SizeResult] = []
    failures: dict[int, str] = {}
    for events in sizes:
        try:
            runs = repeat or (3 if events < REPEAT_BELOW_EVENTS else 1)
            results.append(bench_size(events, workdir, memory_limit, runs))
        except SystemExit as exc:  # a step failed: report it as a miss, keep the other sizes
            failures[events] = first_line(exc)
            log(f"  FAILED: {failures[events]}")
    return results, failures


def scale_section(sizes: list[int], workdir: Path, memory_limit: str | None) -> Section:
    results: list[ScaleResult] = []
    failures: dict[int, str] = {}
    for events in sizes:
        try:
            results.append(bench_scale(events, workdir, memory_limit))
        except SystemExit as exc:
            failures[events] = first_line(exc)
            log(f"  FAILED: {failures[events]}")
    return scale_lines(results, memory_limit), scale_checks(results, failures, memory_limit)


def peer_section(args: argparse.Namespace, workdir: Path) -> Section:
    try:
        res: PeerResult = bench_peer(workdir, args.peer_dir, args.dbt, args.peer_file,
                                     args.peer_base_events, args.peer_copies, args.pairs)
    except SystemExit as exc:
        log(f"  FAILED: {first_line(exc)}")
        return [], [("arpu beside the dbt peer runs", first_line(exc), False)]
    return peer_lines(res), peer_checks(res)


def incremental_section(sizes: list[int], workdir: Path, memory_limit: str | None) -> Section:
    results: list[IncrementalResult] = []
    checks: list[Check] = []
    for events in sizes:
        try:
            results.append(bench_incremental(events, workdir, memory_limit))
        except SystemExit as exc:
            log(f"  FAILED: {first_line(exc)}")
            checks.append((f"incremental build at {human(events)} runs", first_line(exc), False))
    return incremental_lines(results, memory_limit), [*incremental_checks(results), *checks]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    memory_limit = args.memory_limit or None
    if args.peer:
        check_dbt(args.dbt, args.peer_dir)  # before any work: a missing peer fails at once

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.sizes))
    # arpu as installed: `pip install` compiles the package's bytecode, an editable checkout
    # under PYTHONDONTWRITEBYTECODE (this machine) would recompile it on every command
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "runner")], check=True)
    log(f"arpu benchmarks in {workdir}: sizes {', '.join(f'{s:,}' for s in sizes) or 'none'}"
        f"{'; peer' if args.peer else ''}; incremental "
        f"{', '.join(f'{s:,}' for s in args.incremental) or 'none'}")

    speed = calibrate()
    log(f"machine: python -c pass {speed['python_start']:.3f} s, 10M-iteration loop "
        f"{speed['loop']:.2f} s")
    log("bundled sample: fresh copy, arpu build (5 runs)")
    try:
        sample_s, sample_dir = sample_build(workdir)
        help_s = latency(["--help"], sample_dir)
        ls_s = latency(["ls"], sample_dir)
    except SystemExit as exc:  # reported as misses; the other measurements still run
        log(f"  FAILED: {first_line(exc)}")
        sample_s = help_s = ls_s = math.inf
    log(f"  sample build {sample_s:.2f} s; --help {help_s:.3f} s; ls {ls_s:.3f} s")
    log(f"small files: the sample in {SMALL_FILES:,} gzip files, arpu ingest")
    try:
        small_s = small_files_ingest(workdir)
    except SystemExit as exc:
        log(f"  FAILED: {first_line(exc)}")
        small_s = math.inf
    log(f"  {small_s:.2f} s")

    sections: list[Section] = []
    if args.peer:
        sections.append(peer_section(args, workdir))
    if args.incremental:
        sections.append(incremental_section(sorted(set(args.incremental)), workdir,
                                            memory_limit))
    results, failures = floor_sizes([s for s in sizes if s < args.floor_below], workdir,
                                    memory_limit, args.repeat)
    scale = [s for s in sizes if s >= args.floor_below]
    if scale:
        sections.append(scale_section(scale, workdir, memory_limit))

    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None
                                                           else argv)])
    lines, missed = report(results, help_s, ls_s, sample_s, small_s, failures, memory_limit,
                           speed, command, sections)
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    print(text)
    log(f"written {args.out}; {'a target was MISSED' if missed else 'all targets met'}")
    return 1 if missed and not args.report_only else 0


if __name__ == "__main__":
    sys.exit(main())
