"""How fast the metrics layer answers: planning + compiling a query in-process, and `arpu query`
end to end on the bundled sample (a fresh copy of the project, built once).

    python benchmarks/query.py [--repeat 20] [--workdir /tmp/arpu-query-bench] [--report-only]

Targets: plan + compile of 3 metrics, 2 group-by items and a filter under 30 ms (the first
compile in a fresh process, and the median of the next ones); `arpu query` under 1 s end to end;
`arpu --help` under 0.3 s. Exits 1 on a miss unless --report-only."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["arpu", "arppu", "aov"]
GROUP_BY = ["metric_time__week", "user__segment"]
WHERE = ["{{ Dimension('user__is_identified') }} = true"]
COMPILE_SCRIPT = f"""
import json, statistics, sys, time
from pathlib import Path
started = time.perf_counter()
from runner.config import load_config
from runner.metrics.plan import QueryRequest
from runner.metrics.query import SemanticLayer, published_namer
imported = time.perf_counter()
project = Path(sys.argv[1])
config = load_config(project, None)
layer = SemanticLayer.for_project(project, config)
loaded = time.perf_counter()
namer = published_namer(config, config.target)
request = QueryRequest({METRICS!r}, {GROUP_BY!r}, {WHERE!r})
t0 = time.perf_counter()
layer.compile(request, "duckdb", namer)
first = time.perf_counter() - t0
runs = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    layer.compile(request, "duckdb", namer)
    runs.append(time.perf_counter() - t0)
print(json.dumps({{"import": imported - started, "load": loaded - imported, "first": first,
                  "median": statistics.median(runs), "max": max(runs)}}))
"""


def prepare(workdir: Path) -> Path:
    project = workdir / "project"
    if (project / "arpu.duckdb").exists():
        return project
    shutil.rmtree(workdir, ignore_errors=True)
    project.mkdir(parents=True)
    for folder in ("models", "macros", "seeds", "metrics"):
        shutil.copytree(ROOT / folder, project / folder)
    shutil.copy(ROOT / "arpu.yml", project / "arpu.yml")
    done = subprocess.run([sys.executable, "-m", "runner.cli", "-C", str(project), "build",
                           "-q"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"building the sample failed:\n{done.stderr}")
    return project


def timed(args: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            sys.exit(f"{' '.join(args)} failed:\n{done.stderr}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpu-query-bench"))
    parser.add_argument("--report-only", action="store_true")
    options = parser.parse_args()
    import json

    project = prepare(options.workdir)
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(project),
                           str(options.repeat)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(done.stderr)
    compiled = json.loads(done.stdout)
    arpu = [sys.executable, "-m", "runner.cli"]
    query = timed([*arpu, "-C", str(project), "query", "--metrics", ",".join(METRICS),
                   "--group-by", ",".join(GROUP_BY), "--where", WHERE[0]],
                  max(3, options.repeat // 4))
    explain = timed([*arpu, "-C", str(project), "query", "--metrics", ",".join(METRICS),
                     "--group-by", ",".join(GROUP_BY), "--where", WHERE[0], "--explain"],
                    max(3, options.repeat // 4))
    helps = timed([*arpu, "--help"], max(3, options.repeat // 4))
    rows = [
        ("plan + compile, first in the process", compiled["first"] * 1000, "ms", 30),
        ("plan + compile, median of the next", compiled["median"] * 1000, "ms", 30),
        ("load + check metrics/*.yml", compiled["load"] * 1000, "ms", None),
        ("import of the metrics layer", compiled["import"] * 1000, "ms", None),
        ("arpu query, end to end (median)", statistics.median(query), "s", 1.0),
        ("arpu query --explain (median)", statistics.median(explain), "s", None),
        ("arpu --help (median)", statistics.median(helps), "s", 0.3),
    ]
    print(f"query: {', '.join(METRICS)} by {', '.join(GROUP_BY)} where {WHERE[0]}")
    missed = False
    for label, value, unit, target in rows:
        ok = target is None or value < target
        missed |= not ok
        goal = f"(target < {target} {unit})" if target is not None else ""
        print(f"  {label:<40} {value:8.3f} {unit:<2} {goal} {'' if ok else 'MISSED'}")
    if missed and not options.report_only:
        sys.exit(1)


if __name__ == "__main__":
    main()
