"""`arpu build` against its floor: the same compiled SQL (`target/compiled/duckdb/*.sql`,
manifest order) run as `create or replace table` by plain DuckDB in a process of its own, on a
copy of the work database taken after ingest. Run as a script, this file is that process:

    python benchmarks/floor.py DB PROJECT RESULT_JSON MEMORY_LIMIT [MODEL]
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import Proc, arpu, copy_project, gb, log, median, run

WORK_DB = "arpu.work.duckdb"
FUNNEL_MODEL = "derived_funnel_users"


@dataclass
class SizeResult:
    events: int
    seed_s: float = 0.0
    ingest_s: float = 0.0
    build_s: float = 0.0
    build_rss: int = 0
    elapsed_s: float = 0.0
    validation_s: float = 0.0
    publish_s: float = 0.0
    floor_s: float = 0.0  # wall clock of the floor's process, like build_s
    floor_sql_s: float = 0.0  # of which running the SQL (connect to close)
    floor_rss: int = 0
    model_s: dict[str, float] = field(default_factory=dict)
    model_validation_s: dict[str, float] = field(default_factory=dict)
    floor_model_s: dict[str, float] = field(default_factory=dict)
    funnel_alone_s: float = 0.0  # the funnel's SQL in a process of its own, on the floor's tables
    runs: int = 1  # build and floor each run this many times; the medians are reported
    materialized: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.build_s / self.floor_s

    @property
    def core_s(self) -> float:
        """Build wall time without validation and publish."""
        return self.build_s - self.validation_s - self.publish_s


def compiled_models(project: Path) -> list[tuple[str, str, str]]:
    """(model, materialized, compiled SQL) in the manifest's dependency order."""
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    out: list[tuple[str, str, str]] = []
    for name, node in manifest["nodes"].items():
        sql = (project / node["compiled_path"]).read_text().strip().rstrip(";")
        out.append((name, node.get("materialized", "table"), sql))
    return out


def floor_main(db: Path, project: Path, result: Path, memory_limit: str | None,
               only: str | None = None) -> None:
    """The floor, in its own process: every compiled model as `create or replace table`
    (`only`: that one model, on tables a floor run has built)."""
    import duckdb

    total = time.perf_counter()
    con = duckdb.connect(str(db), config={"memory_limit": memory_limit} if memory_limit else {})
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_progress_bar = false")
    seconds: dict[str, float] = {}
    for name, _, sql in compiled_models(project):
        if only and name != only:
            continue
        start = time.perf_counter()
        con.execute(f'create or replace table "{name}" as\n{sql}')
        seconds[name] = time.perf_counter() - start
    con.close()
    total_s = time.perf_counter() - total
    result.write_text(json.dumps({"seconds": seconds, "total": total_s}))


def run_floor(db: Path, project: Path, out: Path, memory_limit: str | None, log_path: Path,
              only: str | None = None) -> tuple[Proc, dict[str, Any]]:
    """`floor_main` in a process of its own: the process, and the seconds it wrote to `out`."""
    p = run([sys.executable, __file__, str(db), str(project), str(out), memory_limit or "",
             *([only] if only else [])], project, log_path)
    if p.returncode != 0:
        raise SystemExit(f"floor{f' ({only} alone)' if only else ''} failed:\n"
                         f"{p.log.read_text()[-2000:]}")
    return p, json.loads(out.read_text())


def restore(pristine: Path, dest: Path) -> None:
    """The work database as it was after ingest (and its WAL, if any)."""
    for path in (dest, dest.with_name(dest.name + ".wal")):
        path.unlink(missing_ok=True)
    shutil.copy2(pristine, dest)
    wal = pristine.with_name(pristine.name + ".wal")
    if wal.exists():
        shutil.copy2(wal, dest.with_name(dest.name + ".wal"))


def bench_size(events: int, workdir: Path, memory_limit: str | None, repeat: int
               ) -> SizeResult:
    res = SizeResult(events)
    project = copy_project(workdir / f"events-{events}", memory_limit=memory_limit)
    logs = project / "bench-logs"
    logs.mkdir()
    data = project / "events.ndjson"
    log(f"{events:,} events: seed -> {data}")
    p = arpu(["seed", "--events", str(events), "--out", str(data), "--no-load"], project,
             logs / "seed.log")
    res.seed_s = p.seconds
    log(f"  seeded in {p.seconds:.1f} s; ingest")
    p = arpu(["ingest", str(data)], project, logs / "ingest.log")
    res.ingest_s = p.seconds
    data.unlink()  # the raw file is in raw_events now; free the disk
    pristine = workdir / f"events-{events}-pristine.duckdb"
    restore(project / WORK_DB, pristine)
    floor_db = workdir / f"events-{events}-floor.duckdb"
    log(f"  ingested in {res.ingest_s:.1f} s; {repeat} x (arpu build, floor), alternating")
    builds: list[tuple[float, dict]] = []
    floors: list[tuple[float, dict]] = []
    funnel_alone: list[float] = []
    for i in range(repeat):
        # each build starts from the same state: nothing published, the ingested work file
        restore(pristine, project / WORK_DB)
        for path in project.glob("arpu.duckdb*"):
            path.unlink()
        shutil.rmtree(project / "target", ignore_errors=True)
        p = arpu(["build"], project, logs / f"build-{i}.log")
        res.build_rss = max(res.build_rss, p.max_rss)
        builds.append((p.seconds, json.loads((project / "target" / "run_results.json")
                                             .read_text())))
        restore(pristine, floor_db)
        out = workdir / f"events-{events}-floor.json"
        p, floor = run_floor(floor_db, project, out, memory_limit, logs / f"floor-{i}.log")
        res.floor_rss = max(res.floor_rss, p.max_rss)
        floors.append((p.seconds, floor))
        # the funnel's SQL alone, in a fresh process: its scaling without the memory that the
        # models before it left in the floor's buffer pool
        _, alone = run_floor(floor_db, project, out, memory_limit, logs / f"funnel-{i}.log",
                             only=FUNNEL_MODEL)
        funnel_alone.append(alone["seconds"][FUNNEL_MODEL])
        log(f"    run {i + 1}: build {builds[-1][0]:.1f} s, floor {floors[-1][0]:.1f} s")
    # every figure is its own median over the runs, per-model seconds included: one slow
    # model in one run moves neither the wall clock nor another model's figure
    runs = [rr for _, rr in builds]
    res.runs = repeat
    res.build_s = median(seconds for seconds, _ in builds)
    res.floor_s = median(seconds for seconds, _ in floors)
    res.elapsed_s = median(rr["elapsed_seconds"] for rr in runs)
    res.validation_s = median(rr.get("validation_seconds") for rr in runs)
    res.publish_s = median(rr.get("publish_seconds") for rr in runs)
    per_run = [{r["model"]: r for r in rr["results"]} for rr in runs]
    for name, r in per_run[0].items():
        res.model_s[name] = median(m[name].get("seconds") for m in per_run)
        res.model_validation_s[name] = median(m[name].get("validation_seconds") for m in per_run)
        res.materialized[name] = r.get("materialized", "")
    res.floor_sql_s = median(floor["total"] for _, floor in floors)
    res.funnel_alone_s = median(funnel_alone)
    res.floor_model_s = {name: median(floor["seconds"][name] for _, floor in floors)
                         for name in floors[0][1]["seconds"]}
    log(f"  build {res.build_s:.1f} s (elapsed {res.elapsed_s:.1f}, validation "
        f"{res.validation_s:.1f}, publish {res.publish_s:.1f}), peak RSS {gb(res.build_rss)}; "
        f"floor {res.floor_s:.1f} s (peak RSS {gb(res.floor_rss)}); build/floor {res.ratio:.2f}")
    for path in (pristine, floor_db):
        for extra in (path, path.with_name(path.name + ".wal")):
            extra.unlink(missing_ok=True)
    shutil.rmtree(project / "target" / "compiled", ignore_errors=True)
    for db in project.glob("*.duckdb"):
        db.unlink()
    return res


def growth(t1: float, t2: float, n1: int, n2: int) -> float:
    """Time ratio normalised to a doubling of the input."""
    return (t2 / t1) ** (1 / math.log2(n2 / n1))


def size_table(r: SizeResult) -> list[str]:
    lines = [
        f"### {r.events:,} events",
        "",
        f"seed {r.seed_s:.1f} s, ingest {r.ingest_s:.1f} s (not part of the build); build and "
        f"floor run {r.runs} time{'s' if r.runs > 1 else ''} each, alternating: "
        "each figure is its own median over the runs (per-model seconds too), peak RSS the "
        "highest.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| `arpu build` wall | {r.build_s:.2f} s |",
        f"| run_results elapsed_seconds | {r.elapsed_s:.2f} s |",
        f"| validation_seconds | {r.validation_s:.2f} s ({r.validation_s / r.elapsed_s:.1%}) |",
        f"| publish_seconds | {r.publish_s:.2f} s ({r.publish_s / r.elapsed_s:.1%}) |",
        f"| build − validation − publish | {r.core_s:.2f} s |",
        f"| floor process wall (compiled SQL, plain DuckDB) | {r.floor_s:.2f} s |",
        f"| floor connect to close (the SQL alone) | {r.floor_sql_s:.2f} s |",
        f"| {FUNNEL_MODEL} alone, in a process of its own | {r.funnel_alone_s:.2f} s |",
        f"| build / floor | {r.ratio:.2f} |",
        f"| (build − validation − publish) / floor | {r.core_s / r.floor_s:.2f} |",
        f"| `arpu build` peak RSS | {gb(r.build_rss)} |",
        f"| floor process peak RSS | {gb(r.floor_rss)} |",
        "",
        "| model | materialized | build s | validation s | floor s | build / floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, secs in r.model_s.items():
        fl = r.floor_model_s.get(name, 0.0)
        ratio = f"{secs / fl:.2f}" if fl > 0 else "–"
        lines.append(f"| {name} | {r.materialized.get(name, '')} | {secs:.2f} | "
                     f"{r.model_validation_s.get(name, 0.0):.2f} | {fl:.2f} | {ratio} |")
    lines.append(f"| **sum** | | {sum(r.model_s.values()):.2f} | "
                 f"{sum(r.model_validation_s.values()):.2f} | "
                 f"{sum(r.floor_model_s.values()):.2f} | |")
    return lines


if __name__ == "__main__":
    db, project, result, limit, *only = sys.argv[1:]
    floor_main(Path(db), Path(project), Path(result), limit or None, only[0] if only else None)
