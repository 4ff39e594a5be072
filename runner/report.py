"""Terminal output: progress while work runs, summaries and tables after (rich)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runner.events import (
    BuildEvent,
    ModelFinished,
    ModelStarted,
    SampleLoaded,
    SourceFilesLoaded,
    UnfinishedLoadsDiscarded,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.artifacts import BuildResult, ModelResult, Shown
    from runner.context import Context
    from runner.ingest import IngestResult

STATUS_STYLE = {"success": "green", "error": "red", "skipped": "yellow"}


class RunLog:
    """`target/arpu.log`: what each command did, appended, one line per event with a
    timestamp and the process id (dbt's logs/dbt.log)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8", buffering=1)

    def write(self, level: str, message: str) -> None:
        if self._file.closed:
            return
        now = dt.datetime.now().astimezone().isoformat(sep=" ", timespec="milliseconds")
        self._file.write(f"{now} {os.getpid():>7} {level:<5} {message}\n")

    def close(self) -> None:
        self._file.close()


class Output:
    """Where a command's events go: the terminal (rich text with progress, or with
    `--log-format json` one JSON object per line on stdout), `quiet` keeping only errors and
    the summary line, and every event also in the project's log."""

    def __init__(self, console: Console, quiet: bool = False, json: bool = False,
                 log: RunLog | None = None,
                 interrupted: Callable[[], bool] = lambda: False) -> None:
        self.console, self.quiet, self.json, self.log = console, quiet, json, log
        self.interrupted = interrupted  # Ctrl-C was pressed (the CLI's signal handler)

    @property
    def text(self) -> bool:
        """Human lines on the terminal (not JSON); `quiet` still limits them."""
        return not self.json

    @property
    def live(self) -> bool:
        """Spinners and progress bars: text, not quiet."""
        return not self.json and not self.quiet

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        """One event: a line in the log, and a JSON object on stdout in JSON mode (quiet:
        errors and the summary only)."""
        if self.log is not None:
            flat = {f"{k}.{sub}" if isinstance(v, dict) else k: value
                    for k, v in fields.items()
                    for sub, value in (v.items() if isinstance(v, dict) else [(k, v)])}
            self.log.write(level, event + "".join(f" {k}={_log_value(v)}" for k, v in
                                                  flat.items() if v is not None))
        if self.json and (not self.quiet or level == "error" or event == "summary"):
            now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
            record = {"ts": now, "level": level, "event": event, **fields}
            sys.stdout.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
            sys.stdout.flush()


def _log_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if any(c.isspace() for c in text) else text


def build_with_progress(ctx: Context, select: list[str] | None, out: Output,
                        mode: str = "build", full_refresh: bool = False,
                        exclude: list[str] | None = None, fail_fast: bool = False
                        ) -> BuildResult:
    """mode: `build` (run and validate), `run` (no validation) or `test` (validate only).
    Whatever stops it before the end (a compile error, a lock, Ctrl-C) is recorded in
    run_results.json and junit.xml."""
    with ctx.recording_results(validate=mode != "run"):
        return _build_with_progress(ctx, select, out, mode, full_refresh, exclude, fail_fast)


def _build_with_progress(ctx: Context, select: list[str] | None, out: Output, mode: str,
                         full_refresh: bool, exclude: list[str] | None, fail_fast: bool
                         ) -> BuildResult:
    console = out.console
    total = len(ctx.compiler().graph.select(select, exclude))
    verb = {"build": "Building", "run": "Running", "test": "Testing"}[mode]
    target = ctx.target
    started = time.perf_counter()
    out.emit("start", command=mode, target=ctx.target_name, models=total)
    detail = target.connecting_detail()
    connecting = f"Connecting to {escape(ctx.target_name)} ({target.type})" + (
        f", {escape(detail)}" if detail else "")
    with console.status(connecting) if out.live else nullcontext():
        ctx.engine()
    if target.reports_connecting and out.live:
        console.print(f"Connected to {escape(ctx.target_name)} ({target.type}) in "
                      f"{time.perf_counter() - started:.1f} s", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console, transient=True,
                  disable=not out.live) as bar:
        task = bar.add_task(f"{verb} on {ctx.target_name}", total=total)

        def on_event(event: BuildEvent) -> None:
            if out.interrupted():  # DuckDB reports Ctrl-C as the error of the query it
                raise KeyboardInterrupt  # stopped, which some code may have caught
            if isinstance(event, SampleLoaded):
                loaded, rejected = event.result.loaded, event.result.rejected
                out.emit("seeded", file=event.path, loaded=loaded, rejected=rejected)
                if out.text and not out.quiet:
                    console.print(f"Fresh project: loaded the bundled sample {event.path} "
                                  f"({loaded:,} messages, {rejected:,} rejected)",
                                  highlight=False, markup=False)
            elif isinstance(event, SourceFilesLoaded):
                got = event.result
                out.emit("source_loaded", path=event.pattern, files=len(got.files),
                         loaded=got.loaded, rejected=got.rejected)
                if out.text and not out.quiet:
                    files = f"{len(got.files):,} new file" + ("" if len(got.files) == 1 else "s")
                    console.print(f"Loaded {files} of source.path {event.pattern} "
                                  f"({got.loaded:,} messages, {got.rejected:,} rejected)",
                                  highlight=False, markup=False)
                    if event.sample_removed:
                        _sample_removed(console, event.sample_removed)
            elif isinstance(event, UnfinishedLoadsDiscarded):
                out.emit("discarded", rows=event.rows)
                if out.text and not out.quiet:
                    console.print(f"Removed {event.rows:,} rows of an ingest that did not "
                                  "finish (it was stopped before it recorded its load): load "
                                  "the file again.", highlight=False)
            elif isinstance(event, ModelStarted):
                bar.update(task, description=f"{verb} {event.model}")
                out.emit("model_start", model=event.model)
            elif isinstance(event, ModelFinished):
                bar.advance(task)
                _model_done(out, event.result)

        if mode == "test":
            return ctx.test(select, on_event=on_event, exclude=exclude, fail_fast=fail_fast)
        return ctx.build(select, on_event=on_event, validate=mode == "build",
                         full_refresh=full_refresh, exclude=exclude, fail_fast=fail_fast)


def _model_done(out: Output, result: ModelResult) -> None:
    name = result.model
    checks = result.expectations
    passed = sum(e["success"] for e in checks)
    warned = sum(not e["success"] and e["severity"] == "warn" for e in checks)
    seconds = result.seconds + result.validation_seconds
    out.emit("model_done", level="error" if result.status == "error" else "info", model=name,
             status=result.status, rows=result.rows, seconds=round(seconds, 4),
             checks={"passed": passed, "failed": len(checks) - passed - warned,
                     "warned": warned} if checks else None, error=result.error)
    if not out.text or (out.quiet and result.status != "error"):
        return
    style = STATUS_STYLE.get(result.status, "white")
    rows = f"{result.rows:,} rows" if result.rows is not None else ""
    tally = f"{passed}/{len(checks)} checks" if checks else ""
    if warned:
        tally += f", {warned} warn"
    out.console.print(f"  [{style}]{result.status:<7}[/{style}] {name:<32} "
                      f"{rows:>14} {tally:>20}  {seconds:6.2f} s", highlight=False)
    if result.error:
        out.console.print(f"           [{style}]{escape(result.error)}[/{style}]",
                          highlight=False, soft_wrap=True)


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


def print_build_summary(result: BuildResult, out: Output) -> None:
    """The expectations that failed or warned, then one summary line (the only one, with
    the errors, that `--quiet` prints); in JSON mode one `summary` event."""
    console = out.console
    checks = result.expectations
    failed = sum(not e["success"] and e["severity"] == "error" for e in checks)
    warned = sum(not e["success"] and e["severity"] == "warn" for e in checks)
    counts = {s: sum(r.status == s for r in result.results) for s in STATUS_STYLE}
    out.emit("summary", level="info" if result.success else "error", success=result.success,
             target=result.target, seconds=round(result.seconds, 3),
             models=len(result.results), succeeded=counts["success"], failed=counts["error"],
             skipped=counts["skipped"],
             expectations={"passed": len(checks) - failed - warned, "failed": failed,
                           "warned": warned} if result.validated else None,
             messages_loaded=result.messages_loaded,
             duplicates_removed=result.duplicates_removed,
             publish_seconds=round(result.publish_seconds, 3) or None)
    if not out.text:
        return
    if not out.quiet:
        print_expectations(result, console)
        if result.validated:
            console.print(f"Expectations: {len(checks) - failed - warned} passed, {failed} "
                          f"failed, {warned} warned ({result.validation_seconds:.2f} s); "
                          "target/junit.xml written.", highlight=False)
    done = "built" if result.results and result.results[0].compiled_path else "checked"
    console.print(
        f"Done in {result.seconds:.2f} s on {result.target}: {counts['success']} {done}, "
        f"{counts['error']} failed, {counts['skipped']} skipped. "
        f"{result.messages_loaded:,} messages loaded, {result.duplicates_removed:,} duplicates "
        "removed." + (f" Published in {result.publish_seconds:.2f} s."
                      if result.publish_seconds else ""), highlight=False, soft_wrap=True)


def ingest_with_progress(ctx: Context, paths: list[str | Path] | list[str],
                         console: Console, sample: bool = False) -> IngestResult:
    from runner.ingest import EVENT_SUFFIXES, expand_paths

    skipped: list[Path] = []
    files = expand_paths(list(paths), skipped)
    if skipped:
        names = ", ".join(str(p) for p in skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        console.print(f"Skipped {len(skipped):,} files that are not event files "
                      f"({', '.join(EVENT_SUFFIXES)}, plain or .gz, or a .gz of JSON objects): "
                      f"{names}", highlight=False, markup=False, soft_wrap=True)  # whole names
    total = sum(p.stat().st_size for p in files)
    with Progress(TextColumn("Ingesting"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("ingest", total=total)
        result = ctx.ingest(list(files), progress=lambda n: bar.advance(task, n), sample=sample)
    if ctx.unfinished_discarded:
        console.print(f"Removed {ctx.unfinished_discarded:,} rows of an earlier ingest that did "
                      "not finish (it was stopped before it recorded its load).",
                      highlight=False)
    if ctx.sample_removed:
        _sample_removed(console, ctx.sample_removed)
    return result


def _sample_removed(console: Console, messages: int) -> None:
    console.print(f"Removed the sample data loaded earlier ({messages:,} messages, by `arpu "
                  "build` or `arpu seed`): it never mixes with other data.", highlight=False)


# An ingest of more files than this (a year of Segment's S3 folder: thousands) lists only those
# with rejected lines, up to this many, and counts the rest in one line
FILE_LINES = 20


def print_ingest(result: IngestResult, console: Console) -> None:
    files = result.files
    shown = files if len(files) <= FILE_LINES else [f for f in files if f.rejected][:FILE_LINES]
    for f in shown:
        console.print(f"{f.path}: {f.lines_read:,} lines read, {f.loaded:,} loaded, "
                      f"{f.rejected:,} rejected", highlight=False, soft_wrap=True,
                      markup=False)  # a file name is data: `[red].ndjson` prints as named
    listed = {id(f) for f in shown}
    rest = [f for f in files if id(f) not in listed]
    if rest:
        bad = sum(1 for f in rest if f.rejected)
        which = f"... and {len(rest):,} more files" if shown else f"{len(rest):,} files"
        lines = f"{bad:,} of them with rejected lines" if bad else "every line loaded"
        console.print(f"{which}, {sum(f.lines_read for f in rest):,} lines read, {lines} (each "
                      "file's counts: `arpu show raw_loads`)", highlight=False, soft_wrap=True)
    mb = result.bytes / 1e6
    console.print(f"Total: {result.lines_read:,} lines read, {result.loaded:,} loaded, "
                  f"{result.rejected:,} rejected ({mb:.1f} MB in {result.seconds:.1f} s, "
                  f"{mb / max(result.seconds, 1e-9):.0f} MB/s)", highlight=False, soft_wrap=True)


# -- arpu show ------------------------------------------------------------------------------
# Characters that would move the cursor, ring, recolour or reorder a terminal line (C0, DEL,
# C1 and Unicode's bidirectional controls): a table shows them as escapes (`\n`, `\x1b`).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _json_text(value: Any) -> str:
    """A JSON value (PostgreSQL's json/jsonb arrive as dicts and lists) as compact JSON, the
    text DuckDB and Spark hand back for the same column."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _exact(value: Decimal) -> int | float:
    """A numeric as the number it is: `sum(quantity)` on PostgreSQL is an integral Decimal."""
    exponent = value.as_tuple().exponent
    return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)


def format_number(value: float) -> str:
    """Floats for reading: scientific below 1e-3 (a p-value of 3.2e-07 is not `0.0000`) and
    from 1e15, 2 decimals with thousands separators from 1, else 4 significant digits."""
    size = abs(value)
    if size == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    if size < 1e-3 or size >= 1e15:
        return f"{value:.3g}"
    return f"{value:,.2f}" if size >= 1 else f"{value:.4g}"


def _cell(value: Any) -> str:
    """A value as table text: whole, numbers formatted, JSON as JSON, no control characters."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Decimal):
        number = _exact(value)
        text = str(number) if isinstance(number, int) else format_number(number)
    elif isinstance(value, float):
        text = format_number(value)
    elif isinstance(value, (dict, list)):
        text = _json_text(value)
    else:
        text = str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _csv_value(value: Any) -> Any:
    from runner.cohort import csv_safe

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _exact(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return csv_safe(_json_text(value))
    return csv_safe(value)


def _json_value(value: Any, is_json: bool) -> Any:
    if isinstance(value, Decimal):
        return _exact(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or Infinity
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if is_json and isinstance(value, str):  # DuckDB's and Spark's JSON arrive as text
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _footer(shown: Shown) -> str:
    order = f", ordered by {', '.join(shown.order_by)}" if shown.order_by else ""
    if len(shown.rows) < shown.total:
        return (f"{shown.name}: {len(shown.rows):,} of {shown.total:,} rows{order}; "
                "--limit to see more")
    return f"{shown.name}: {shown.total:,} row{'' if shown.total == 1 else 's'}{order}"


def print_rows(shown: Shown, fmt: str, console: Console) -> None:
    """`arpu show`. `json`: one object per line, JSON columns as JSON; `csv`: a header, then
    rows (JSON columns as JSON text, formula-like cells quoted); for both, a note on stderr
    when rows were left out. `table`: whole values, never cut: a table when it fits the
    console's width, else psql's expanded display, one `-[ RECORD n ]-` block per row."""
    if fmt in ("json", "csv"):
        if fmt == "json":
            for row in shown.rows:
                record = {c: _json_value(v, c in shown.json_columns)
                          for c, v in zip(shown.columns, row, strict=True)}
                sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        else:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(shown.columns)
            writer.writerows([[_csv_value(v) for v in row] for row in shown.rows])
        sys.stdout.flush()
        if len(shown.rows) < shown.total:
            sys.stderr.write(_footer(shown) + "\n")
        return
    from rich.measure import Measurement
    from rich.text import Text

    names = [_cell(c) for c in shown.columns]
    cells = [[_cell(v) for v in row] for row in shown.rows]
    numeric = [bool(shown.rows) and all(
        isinstance(row[i], (int, float, Decimal)) and not isinstance(row[i], bool)
        for row in shown.rows if row[i] is not None) for i in range(len(names))]
    table = Table(title=Text(shown.name), title_style="bold")
    for name, right in zip(names, numeric, strict=True):
        table.add_column(Text(name), justify="right" if right else "left", no_wrap=True)
    for texts in cells:
        table.add_row(*(Text(c) for c in texts))
    footer = _footer(shown)
    natural = Measurement.get(console, console.options.update_width(1 << 20), table).maximum
    if natural <= console.width:
        console.print(table)
    else:
        _print_expanded(names, cells, console)
        footer += f" (expanded display: the table is wider than {console.width} columns)"
    console.print(Text(footer, style="dim"))


def _print_expanded(names: list[str], rows: list[list[str]], console: Console) -> None:
    """psql's `\\x` layout: `name | value` lines, long values folded under the value."""
    from rich.cells import cell_len
    from rich.text import Text

    name_width = max((cell_len(n) for n in names), default=0)
    value_width = max(console.width - name_width - 3, 16)
    for number, row in enumerate(rows, start=1):
        folded = [Text(v).wrap(console, value_width, overflow="fold") if v else [Text()]
                  for v in row]
        widest = max((line.cell_len for lines in folded for line in lines), default=0)
        head = f"-[ RECORD {number} ]".ljust(name_width + 1, "-")
        console.print(Text(head + "+" + "-" * (widest + 1)), soft_wrap=True)
        for name, lines in zip(names, folded, strict=True):
            for i, line in enumerate(lines):
                label = name if i == 0 else ""
                pad = " " * (name_width - cell_len(label))
                console.print(Text(f"{label}{pad} |" + (" " if line else "")) + line,
                              soft_wrap=True)
