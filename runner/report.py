"""Terminal output: progress while work runs, summaries and tables after (rich)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from runner.artifacts import BuildResult
    from runner.context import Context
    from runner.ingest import IngestResult

STATUS_STYLE = {"success": "green", "error": "red", "skipped": "yellow"}


def build_with_progress(ctx: Context, select: list[str] | None, console: Console,
                        mode: str = "build", full_refresh: bool = False) -> BuildResult:
    """mode: `build` (run and validate), `run` (no validation) or `test` (validate only)."""
    total = len(ctx.compiler().graph.select(select))
    verb = {"build": "Building", "run": "Running", "test": "Testing"}[mode]
    target = ctx.config.targets[ctx.target_name]
    started = time.perf_counter()
    with console.status(f"Connecting to {ctx.target_name} ({target.type})"
                        + (f", starting Spark on {target.master}" if target.type == "spark"
                           else "")):
        ctx.engine()
    if target.type != "duckdb":
        console.print(f"Connected to {ctx.target_name} ({target.type}) in "
                      f"{time.perf_counter() - started:.1f} s", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"{verb} on {ctx.target_name}", total=total)

        def on_event(kind: str, name: str, payload: Any) -> None:
            if kind == "seeded":
                console.print(f"Fresh project: loaded the bundled sample {name} "
                              f"({payload.loaded:,} messages, {payload.rejected:,} rejected)")
            elif kind == "start":
                bar.update(task, description=f"{verb} {name}")
            elif kind == "done":
                bar.advance(task)
                style = STATUS_STYLE.get(payload.status, "white")
                rows = f"{payload.rows:,} rows" if payload.rows is not None else ""
                checks = payload.expectations
                passed = sum(e["success"] for e in checks)
                warned = sum(not e["success"] and e["severity"] == "warn" for e in checks)
                tally = f"{passed}/{len(checks)} checks" if checks else ""
                if warned:
                    tally += f", {warned} warn"
                seconds = payload.seconds + payload.validation_seconds
                console.print(f"  [{style}]{payload.status:<7}[/{style}] {name:<32} "
                              f"{rows:>14} {tally:>20}  {seconds:6.2f} s", highlight=False)
                if payload.error:
                    console.print(f"           [{style}]{payload.error}[/{style}]",
                                  highlight=False, soft_wrap=True)

        if mode == "test":
            return ctx.test(select, on_event=on_event)
        return ctx.build(select, on_event=on_event, validate=mode == "build",
                         full_refresh=full_refresh)


def print_expectations(result: BuildResult, console: Console) -> None:
    """The failed and warned expectations, one row each, with what was observed."""
    rows = [(r.model, e) for r in result.results for e in r.expectations if not e["success"]]
    if not rows:
        return
    table = Table("relation", "severity", "expectation", "observed", title="Expectations")
    for model, e in rows:
        style = "red" if e["severity"] == "error" else "yellow"
        table.add_row(model, f"[{style}]{e['severity']}[/{style}]", e["expectation"],
                      str(e["observed"]))
    console.print(table)


def print_build_summary(result: BuildResult, console: Console) -> None:
    print_expectations(result, console)
    checks = result.expectations
    if result.validated:
        failed = sum(not e["success"] and e["severity"] == "error" for e in checks)
        warned = sum(not e["success"] and e["severity"] == "warn" for e in checks)
        console.print(f"Expectations: {len(checks) - failed - warned} passed, {failed} failed, "
                      f"{warned} warned ({result.validation_seconds:.2f} s); "
                      "target/junit.xml written.", highlight=False)
    counts = {s: sum(r.status == s for r in result.results) for s in STATUS_STYLE}
    done = "built" if result.results and result.results[0].compiled_path else "checked"
    console.print(
        f"Done in {result.seconds:.2f} s on {result.target}: {counts['success']} {done}, "
        f"{counts['error']} failed, {counts['skipped']} skipped. "
        f"{result.messages_loaded:,} messages loaded, {result.duplicates_removed:,} duplicates "
        "removed." + (f" Published in {result.publish_seconds:.2f} s."
                      if result.publish_seconds else ""), highlight=False)


def ingest_with_progress(ctx: Context, paths: list[str | Path] | list[str],
                         console: Console, sample: bool = False) -> IngestResult:
    from runner.ingest import expand_paths

    files = expand_paths(list(paths))
    total = sum(p.stat().st_size for p in files)
    with Progress(TextColumn("Ingesting"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("ingest", total=total)
        result = ctx.ingest(list(files), progress=lambda n: bar.advance(task, n), sample=sample)
    if ctx.sample_removed:
        console.print(f"Removed the sample data loaded earlier ({ctx.sample_removed:,} messages, "
                      "by `arpu build` or `arpu seed`): it never mixes with other data.",
                      highlight=False)
    return result


def print_ingest(result: IngestResult, console: Console) -> None:
    for f in result.files:
        console.print(f"{f.path}: {f.lines_read:,} lines read, {f.loaded:,} loaded, "
                      f"{f.rejected:,} rejected", highlight=False)
    mb = result.bytes / 1e6
    console.print(f"Total: {result.lines_read:,} lines read, {result.loaded:,} loaded, "
                  f"{result.rejected:,} rejected ({mb:.1f} MB in {result.seconds:.1f} s, "
                  f"{mb / max(result.seconds, 1e-9):.0f} MB/s)", highlight=False)


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def print_rows(columns: list[str], rows: list[tuple], fmt: str, console: Console,
               title: str = "") -> None:
    if fmt == "json":
        for row in rows:
            sys.stdout.write(json.dumps({c: _plain(v) for c, v in zip(columns, row, strict=True)},
                                        ensure_ascii=False) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
        return
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*("" if v is None else f"{v:,.4f}" if isinstance(v, float) else str(v)
                        for v in row))
    console.print(table)
