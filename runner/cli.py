"""The `arpu` command line: parse arguments, call the Context, print. Nothing else lives here."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import typer

from runner import interrupts
from runner.errors import ArpuError, UsageError

if TYPE_CHECKING:
    from types import FrameType

    from rich.console import Console

    from runner.context import Context
    from runner.report import Output, RunLog

app = typer.Typer(
    help="arpu: ARPU, funnels, cohorts and A/B readouts from Segment events, in your warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: rendering it with rich doubled `arpu --help`
)
cohort_app = typer.Typer(help="Work with the non-converted cohort.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(cohort_app, name="cohort")

_consoles: dict[bool, Console] = {}


def _console(stderr: bool = False) -> Console:
    """rich's Console, made on first use (importing rich costs `arpu --help` 40 ms). Piped
    output (CI logs) gets 120 columns instead of rich's 80, so tables stay readable."""
    if stderr not in _consoles:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        _consoles[stderr] = Console(stderr=stderr, width=None if stream.isatty() else 120)
    return _consoles[stderr]


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class ListOutput(str, Enum):
    """`arpu ls --output`, as dbt's: a table for people, one name per line for scripts."""

    table = "table"
    name = "name"


_STARTED = time.perf_counter()
_state: dict[str, Any] = {
    "debug": False, "start": Path("."), "project": None, "quiet": False,
    "log_format": LogFormat.text, "fail_fast": False, "log": None, "interrupted": False,
}

SelectOpt = typer.Option(
    None, "--select", "-s", metavar="SELECTOR",
    help="dbt's syntax: m, +m, m+, 2+m, m+1, @m, tag:x, path:models/marts, fqn:, file:; "
         "'a b', -s a b and -s a -s b are a union, 'a,b' an intersection.")
ExcludeOpt = typer.Option(None, "--exclude", metavar="SELECTOR",
                          help="Models to leave out, in --select's syntax.")
VarsOpt = typer.Option(None, "--vars", metavar="JSON|YAML",
                       help="Vars for this run, JSON or YAML: '{\"k\": 1}'.")
TargetOpt = typer.Option(None, "--target", "-t", metavar="NAME",
                         help="Target name from arpu.yml.")
FullRefreshOpt = typer.Option(False, "--full-refresh",
                              help="Rebuild incremental models from all loaded data.")
FailFastOpt = typer.Option(False, "--fail-fast", "-x",
                           help="Start no model after the first failure (the rest are skipped).")
ThreadsOpt = typer.Option(None, "--threads", min=1, metavar="N",
                          help="Models built at once (the target's concurrency).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only errors and the summary line.")
LogFormatOpt = typer.Option(None, "--log-format", case_sensitive=False,
                            help="text, or json: one JSON object per line for each event.")


def _handled(func: Callable[..., Any]) -> Callable[..., Any]:
    """One handler for every command: `Error: ...` on one line, exit 1 or 2 (130 when
    interrupted); --debug re-raises. The project's log records the outcome."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        code = 0
        try:
            return func(*args, **kwargs)
        except typer.Exit as exc:
            code = exc.exit_code
            raise
        except click.ClickException as exc:
            code = exc.exit_code
            raise
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            raise
        except BrokenPipeError:  # `arpu ... | head`: the reader has what it wanted
            _silence_stdout()
            raise typer.Exit(0) from None
        except BaseException as exc:
            code = _exit_code(exc)
            if _state["debug"] and code != 130:
                raise
            raise typer.Exit(code) from None
        finally:
            log: RunLog | None = _state["log"]
            if log is not None:
                log.write("info", f"exit {code} after {time.perf_counter() - _STARTED:.2f} s")
                log.close()
                _state["log"] = None

    return wrapper


def _exit_code(exc: BaseException) -> int:
    """Say what went wrong in one line and return the exit code."""
    from runner.errors import missing_extra
    from runner.lock import duckdb_holder

    if _state["interrupted"] or _was_interrupted(exc):
        # Ctrl-C surfaces as KeyboardInterrupt or as the error of the query it stopped
        _say("Interrupted", "interrupted", 130)
        return 130
    if isinstance(exc, ModuleNotFoundError):
        extra = missing_extra(exc)
        if extra is not None:
            exc = extra
    if isinstance(exc, ArpuError):
        holder = duckdb_holder(exc.message)
        if holder is not None:
            exc = UsageError(f"{holder} holds this database: wait for it to finish or stop it",
                             location=exc.location)
        _say(f"Error: {exc}", "error", exc.exit_code)
        return exc.exit_code
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    _say(f"Error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
         "error", 1)
    return 1


def _was_interrupted(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _say(message: str, event: str, code: int) -> None:
    """An error line on stderr (red on a terminal), and in the log and the JSON events."""
    from rich.markup import escape

    word, _, rest = message.partition(" ")
    _console(stderr=True).print(f"[red]{escape(word)}[/red] {escape(rest)}".rstrip(),
                                highlight=False, soft_wrap=True)
    _output().emit(event, level="error", message=message.removeprefix("Error: "),
                   exit_code=code)


def _silence_stdout() -> None:
    """Python's recipe for a closed pipe: point stdout at /dev/null so the exit's flush does
    not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _project() -> Path:
    """The project folder: where arpu.yml is, at -C (or here) or above; opens its log."""
    if _state["project"] is None:
        from runner.config import find_project
        from runner.report import RunLog

        folder = find_project(_state["start"])
        log = RunLog(folder / "target" / "arpu.log")
        log.write("info", f"arpu {' '.join(sys.argv[1:])} (cwd {Path.cwd()})")
        _state.update(project=folder, log=log)
    project: Path = _state["project"]
    return project


def _output() -> Output:
    """Where this command's events go: the terminal, as --quiet and --log-format say, and
    the project's log (once the project is found)."""
    from runner.report import Output

    return Output(_console(), quiet=_state["quiet"], json=_state["log_format"] == LogFormat.json,
                  log=_state["log"], interrupted=lambda: bool(_state["interrupted"]))


def _context(target: str | None = None, vars_text: str | None = None,
             threads: int | None = None) -> Context:
    from runner.config import parse_vars_option
    from runner.context import Context

    ctx = Context(_project(), target=target, vars=parse_vars_option(vars_text))
    if threads is not None:
        chosen = ctx.config.targets[ctx.target_name]
        if chosen.builds_at_once:
            ctx.config.targets[ctx.target_name] = chosen.model_copy(
                update={"concurrency": threads})
        elif threads > 1:
            _console(stderr=True).print(f"Note: the {chosen.type} target builds one model at a "
                                        "time; --threads is ignored", highlight=False)
    return ctx


@contextmanager
def _writing(command: str) -> Iterator[None]:
    """The project's lock (runner/lock.py) around a command that writes."""
    from runner.lock import project_lock

    with project_lock(_project(), command):
        yield


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("arpu")
        except PackageNotFoundError:  # run from a checkout that is not installed
            from runner import __version__ as number
        typer.echo(f"arpu {number}")
        raise typer.Exit()


@app.callback()
def main_options(
    project_dir: Path = typer.Option(
        Path("."), "--project-dir", "-C",
        help="Where to look for arpu.yml (this folder or its parents)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    quiet: bool = QuietOpt,
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", case_sensitive=False,
                                         help="text, or json: one JSON object per line."),
    fail_fast: bool = FailFastOpt,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print arpu's version and exit."),
) -> None:
    _state.update(debug=debug, start=project_dir, quiet=quiet, log_format=log_format,
                  fail_fast=fail_fast)


def _build(select: list[str] | None, vars_text: str | None, target: str | None,
           mode: str = "build", full_refresh: bool = False, exclude: list[str] | None = None,
           fail_fast: bool = False, threads: int | None = None, quiet: bool = False,
           log_format: LogFormat | None = None) -> None:
    from runner import report

    _state.update(quiet=quiet or _state["quiet"], log_format=log_format or _state["log_format"])
    _project()  # the log first, so that it records every event
    out = _output()
    with _writing(mode), _context(target, vars_text, threads) as ctx:
        result = report.build_with_progress(ctx, select, out, mode, full_refresh, exclude=exclude,
                                            fail_fast=fail_fast or _state["fail_fast"])
    report.print_build_summary(result, out)
    if not result.success:
        raise typer.Exit(1)


@app.command()
@_handled
def build(
    select: list[str] | None = SelectOpt,
    exclude: list[str] | None = ExcludeOpt,
    vars: str | None = VarsOpt,
    target: str | None = TargetOpt,
    full_refresh: bool = FullRefreshOpt,
    fail_fast: bool = FailFastOpt,
    threads: int | None = ThreadsOpt,
    quiet: bool = QuietOpt,
    log_format: LogFormat | None = LogFormatOpt,
) -> None:
    """Compile, run every model in dependency order and validate it."""
    _build(select, vars, target, "build", full_refresh, exclude, fail_fast, threads, quiet,
           log_format)


@app.command()
@_handled
def run(
    select: list[str] | None = SelectOpt,
    exclude: list[str] | None = ExcludeOpt,
    vars: str | None = VarsOpt,
    target: str | None = TargetOpt,
    full_refresh: bool = FullRefreshOpt,
    fail_fast: bool = FailFastOpt,
    threads: int | None = ThreadsOpt,
    quiet: bool = QuietOpt,
    log_format: LogFormat | None = LogFormatOpt,
) -> None:
    """Run the models in dependency order (without validation)."""
    _build(select, vars, target, "run", full_refresh, exclude, fail_fast, threads, quiet,
           log_format)


@app.command("test")
@_handled
def test_(
    select: list[str] | None = SelectOpt,
    exclude: list[str] | None = ExcludeOpt,
    vars: str | None = VarsOpt,
    target: str | None = TargetOpt,
    fail_fast: bool = FailFastOpt,
    quiet: bool = QuietOpt,
    log_format: LogFormat | None = LogFormatOpt,
) -> None:
    """Validate the relations in the warehouse now, without building them."""
    _build(select, vars, target, "test", exclude=exclude, fail_fast=fail_fast, quiet=quiet,
           log_format=log_format)


@app.command()
@_handled
def init(
    path: Path = typer.Argument(Path("."), help="Folder of the new project (made if missing)."),
) -> None:
    """Start a project: arpu.yml, the shipped models, macros and sample, a .gitignore."""
    from runner.scaffold import init_project

    result = init_project(path if path.is_absolute() else _state["start"] / path)
    _console().print(f"Created an arpu project in {result.path}: {', '.join(result.written)} "
                     f"({result.models} models)", highlight=False)
    if result.source is None:
        _console(stderr=True).print(
            "Note: this installation carries no models (a wheel without them): models/ and "
            "macros/ are empty", highlight=False)
    _console().print(f"Next: cd {result.path} && arpu build", highlight=False)


@app.command()
@_handled
def compile(
    target: str | None = TargetOpt,
    select: list[str] | None = SelectOpt,
    exclude: list[str] | None = ExcludeOpt,
    vars: str | None = VarsOpt,
) -> None:
    """Write each model's SQL for a target into target/compiled/<dialect>/ (no connection)."""
    with _context(target, vars) as ctx:
        compiled = ctx.compile(target, select, exclude)
    out = compiled[0].path.parent if compiled else ctx.target_dir
    _console().print(f"Compiled {len(compiled)} models to {out}")


@app.command()
@_handled
def ingest(
    paths: list[str] = typer.Argument(..., help="Files, folders or globs of Segment messages."),
    target: str | None = TargetOpt,
) -> None:
    """Load Segment messages into raw_events; bad lines go to rejected_events."""
    from runner import report

    with _writing("ingest"), _context(target) as ctx:
        result = report.ingest_with_progress(ctx, paths, _console())
    report.print_ingest(result, _console())


@app.command()
@_handled
def seed(
    events: int = typer.Option(100_000, "--events", "-n", help="Messages to generate."),
    seed: int = typer.Option(42, "--seed", help="Random seed (same seed, same bytes)."),
    out: Path | None = typer.Option(None, "--out", help="Write here instead of seeds/."),
    load: bool = typer.Option(True, "--load/--no-load", help="Ingest the file afterwards."),
    target: str | None = TargetOpt,
) -> None:
    """Generate the sample dataset (deterministic) and load it."""
    from runner import report
    from runner.seed import generate

    path = out or _project() / "target" / f"seed_{events}_{seed}.ndjson.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _console().status(f"Generating {events:,} events"):
        stats = generate(path, events=events, seed=seed)
    _console().print(f"Generated {stats.events:,} events ({stats.bytes / 1e6:.1f} MB) in "
                  f"{stats.seconds:.1f} s: {stats.events / max(stats.seconds, 1e-9):,.0f} events/s "
                  f"-> {path}")
    if load:
        with _writing("seed"), _context(target) as ctx:
            result = report.ingest_with_progress(ctx, [str(path)], _console(), sample=True)
        report.print_ingest(result, _console())


@app.command("ls")
@_handled
def ls_(
    select: list[str] | None = SelectOpt,
    exclude: list[str] | None = ExcludeOpt,
    metrics: bool = typer.Option(False, "--metrics",
                                 help="List the metrics of metrics/*.yml instead of models."),
    dimensions: bool = typer.Option(False, "--dimensions",
                                    help="With --metrics A,B: what they can be grouped by."),
    names: list[str] | None = typer.Argument(None, metavar="[METRICS]",
                                             help="With --dimensions --metrics: A,B."),
    output: ListOutput = typer.Option(ListOutput.table, "--output", "-o",
                                      help="table, or name: one model per line (dbt's)."),
) -> None:
    """List models with their materialization and dependencies (or metrics, dimensions)."""
    from rich.table import Table

    if metrics or dimensions or names:
        from runner import report
        from runner.metrics.query import list_semantic

        with _context() as ctx:
            shown = list_semantic(ctx, metrics, dimensions, names or [])
        report.print_rows(shown, "table", _console())
        return
    with _context() as ctx:
        models = ctx.ls(select, exclude)
    if output is ListOutput.name:
        for m in models:
            typer.echo(m.name)
        return
    table = Table("model", "materialized", "depends on", box=None)
    for m in models:
        table.add_row(m.name, m.materialized, ", ".join(m.depends_on))
    _console().print(table)


@app.command()
@_handled
def query(
    metrics: str = typer.Option(..., "--metrics", "-m", metavar="A,B",
                                help="Metrics of metrics/*.yml (arpu ls --metrics)."),
    group_by: str | None = typer.Option(
        None, "--group-by", "-g", metavar="A,B",
        help="metric_time__day|week|month|quarter|year, <entity>__<dimension>, <entity>."),
    where: list[str] | None = typer.Option(
        None, "--where", "-w", metavar="SQL",
        help="\"{{ Dimension('user__segment') }} = 'cohort'\"; several are and-ed."),
    order_by: str | None = typer.Option(None, "--order-by", metavar="A,-B",
                                        help="Columns or metrics; a leading - is descending."),
    limit: int | None = typer.Option(None, "--limit", "-n"),
    start_time: str | None = typer.Option(None, "--start-time", help="From this date or time."),
    end_time: str | None = typer.Option(None, "--end-time", help="Up to this date or time."),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    explain: bool = typer.Option(False, "--explain", help="Print the SQL instead of running."),
    dialect: str | None = typer.Option(None, "--dialect", metavar="D",
                                       help="With --explain: the SQL for this dialect."),
    target: str | None = TargetOpt,
) -> None:
    """Ask for metrics at any grain and slice (MetricFlow's names), from the published relations."""
    from runner import report
    from runner.metrics.query import compile_query, request_from_options, run_query

    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("must be table, csv or json", param_hint="--format")
    if dialect is not None and not explain:
        raise typer.BadParameter("goes with --explain", param_hint="--dialect")
    request = request_from_options(metrics, group_by, where, order_by, limit, start_time,
                                   end_time)
    with _context(target) as ctx:
        if explain:
            typer.echo(compile_query(ctx, request, dialect).sql)
            return
        result = run_query(ctx, request)
    report.print_rows(result.shown, format, _console())


@app.command()
@_handled
def show(
    model: str = typer.Argument(..., help="Model (relation) name."),
    limit: int = typer.Option(20, "--limit", "-n"),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    target: str | None = TargetOpt,
) -> None:
    """Print rows of a built relation, in key order, whole (see README: arpu show)."""
    from runner import report

    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("must be table, csv or json", param_hint="--format")
    with _context(target) as ctx:
        shown = ctx.show(model, limit)
    report.print_rows(shown, format, _console())


@cohort_app.command("export")
@_handled
def cohort_export(
    category: str | None = typer.Option(None, "--category", "-c",
                                           help="Default: the recommended category."),
    format: str = typer.Option("csv", "--format", "-f", help="csv or ndjson."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Default: stdout."),
    target: str | None = TargetOpt,
) -> None:
    """Export the non-converted cohort of a category as CSV or Segment identify messages."""
    from runner.cohort import export_cohort

    if format not in ("csv", "ndjson"):
        raise typer.BadParameter("must be csv or ndjson", param_hint="--format")
    with _context(target) as ctx:
        if out is None:
            summary = export_cohort(ctx, category, format, sys.stdout)
        else:  # a failed export leaves an existing file as it was: written aside, then renamed
            partial = out.with_name(f".{out.name}.arpu-{os.getpid()}")
            try:
                with open(partial, "w", newline="") as handle:
                    summary = export_cohort(ctx, category, format, handle)
                os.replace(partial, out)
            finally:
                partial.unlink(missing_ok=True)
    if out:
        _console().print(f"Exported {summary.users:,} users of '{summary.category}' to {out}")


@app.command()
@_handled
def dashboard(
    out: Path = typer.Option(Path("target/dashboard.html"), "--out", "-o"),
    open_: bool = typer.Option(False, "--open", help="Open it in a browser."),
    target: str | None = TargetOpt,
    vars: str | None = VarsOpt,
) -> None:
    """Write one self-contained HTML dashboard of the published relations (works offline)."""
    from runner.board import render_dashboard

    with _context(target, vars) as ctx:
        path = out if out.is_absolute() else ctx.project_dir / out
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = render_dashboard(ctx, path)
    _console().print(f"Wrote {summary.path} ({len(summary.panels)} panels)")
    if open_:
        import webbrowser

        webbrowser.open(summary.path.resolve().as_uri())


SELECTOR_FLAGS = ("--select", "-s", "--exclude")
SELECTING = ("build", "run", "test", "compile", "ls")
GLOBAL_VALUES = ("-C", "--project-dir", "--log-format")


def _selector_words(args: list[str]) -> list[str]:
    """dbt's `--select a b` (the flag takes every word up to the next option): the words
    become one argument, `--select "a b"`, which is a union as in dbt. Only for the commands
    that select, and only words that do not start with `-`."""
    out: list[str] = []
    command = None
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1:])
            break
        if command is None and not arg.startswith("-") and not (
                out and out[-1] in GLOBAL_VALUES):
            command = arg
        flag, equals, value = arg.partition("=")
        if command not in SELECTING or flag not in SELECTOR_FLAGS:
            out.append(arg)
            continue
        words = [value] if equals else args[i:i + 1]
        i += 0 if equals else len(words)
        while i < len(args) and not args[i].startswith("-"):
            words.append(args[i])
            i += 1
        out.extend([flag, " ".join(words)] if words else [arg])
    return out


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: stop the command where it is (KeyboardInterrupt; a build in progress is
    abandoned, the published database stays as it was); a second Ctrl-C ends the process
    at once, as a kill would, which the build also survives.

    Not while an extension module initializes: interrupted there, it aborts the process
    (DuckDB's: "Critical nanobind error", SIGABRT, exit -6). The signal comes again shortly,
    until the module is ready."""
    if _initializing_extension(frame):
        threading.Timer(EXTENSION_RETRY_SECONDS, os.kill, (os.getpid(), signal.SIGINT)).start()
        return
    if _state["interrupted"]:
        os.write(2, b"Interrupted\n")
        os._exit(130)
    _state["interrupted"] = True
    if interrupts.past_publish():  # the build publishes and reports it, as if not pressed
        return
    raise KeyboardInterrupt


EXTENSION_RETRY_SECONDS = 0.01


def _initializing_extension(frame: FrameType | None) -> bool:
    """An extension module's loader is creating or executing it, below `frame`."""
    from importlib.machinery import ExtensionFileLoader

    while frame is not None:
        if frame.f_code.co_name in ("create_module", "exec_module") and isinstance(
                frame.f_locals.get("self"), ExtensionFileLoader):
            return True
        frame = frame.f_back
    return False


def main() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    code: int | str | None = 0
    try:
        app(args=_selector_words(sys.argv[1:]), prog_name="arpu")
    except SystemExit as exc:
        code = exc.code
    except BrokenPipeError:
        code = 0
    except KeyboardInterrupt:  # between commands' handlers (while parsing, say)
        sys.stderr.write("Interrupted\n")
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: a late Ctrl-C
    try:                                          # must not turn its exit into a traceback
        sys.stdout.flush()
    except BrokenPipeError:  # the reader closed the pipe (`arpu cohort export | head`)
        _silence_stdout()
    sys.exit(code)


if __name__ == "__main__":
    main()
