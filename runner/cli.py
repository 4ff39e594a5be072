"""The `arpu` command line: parse arguments, call the Context, print. Nothing else lives here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from runner.errors import ArpuError

if TYPE_CHECKING:
    from rich.console import Console

    from runner.context import Context

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

_state: dict[str, Any] = {"debug": False, "project_dir": Path(".")}

SelectOpt = typer.Option(None, "--select", "-s", metavar="MODELS",
                         help="Models: m, m+, +m, tag:x (repeatable).")
VarsOpt = typer.Option(None, "--vars", metavar="JSON|YAML",
                       help="Vars for this run, JSON or YAML: '{\"k\": 1}'.")
TargetOpt = typer.Option(None, "--target", "-t", metavar="NAME",
                         help="Target name from arpu.yml.")
FullRefreshOpt = typer.Option(False, "--full-refresh",
                              help="Rebuild incremental models from all loaded data.")


def _handled(func: Callable[..., Any]) -> Callable[..., Any]:
    """One handler for every command: `Error: ...` on one line, exit 1 or 2; --debug re-raises."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ArpuError as exc:
            if _state["debug"]:
                raise
            _console(stderr=True).print(f"[red]Error:[/red] {exc}", markup=True,
                                        highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _console(stderr=True).print("[red]Interrupted[/red]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.BadParameter, SystemExit):
            raise
        except Exception as exc:  # a bug or an engine error: still one line unless --debug
            if _state["debug"]:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _console(stderr=True).print(f"[red]Error:[/red] {type(exc).__name__}: {first} "
                                        "(run with --debug for the traceback)",
                                        highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _context(target: str | None = None, vars_text: str | None = None) -> Context:
    from runner.config import parse_vars_option
    from runner.context import Context

    return Context(_state["project_dir"], target=target, vars=parse_vars_option(vars_text))


@app.callback()
def main_options(
    project_dir: Path = typer.Option(Path("."), "--project-dir", "-C", help="Project folder."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    _state["debug"] = debug
    _state["project_dir"] = project_dir


def _build(select: list[str] | None, vars_text: str | None, target: str | None,
           mode: str = "build", full_refresh: bool = False) -> None:
    from runner import report

    with _context(target, vars_text) as ctx:
        result = report.build_with_progress(ctx, select, _console(), mode, full_refresh)
    report.print_build_summary(result, _console())
    if not result.success:
        raise typer.Exit(1)


@app.command()
@_handled
def build(
    select: list[str] | None = SelectOpt,
    vars: str | None = VarsOpt,
    target: str | None = TargetOpt,
    full_refresh: bool = FullRefreshOpt,
) -> None:
    """Compile, run every model in dependency order and validate it."""
    _build(select, vars, target, full_refresh=full_refresh)


@app.command()
@_handled
def run(
    select: list[str] | None = SelectOpt,
    vars: str | None = VarsOpt,
    target: str | None = TargetOpt,
    full_refresh: bool = FullRefreshOpt,
) -> None:
    """Run the models in dependency order (without validation)."""
    _build(select, vars, target, mode="run", full_refresh=full_refresh)


@app.command("test")
@_handled
def test_(
    select: list[str] | None = SelectOpt,
    vars: str | None = VarsOpt,
    target: str | None = TargetOpt,
) -> None:
    """Validate the relations in the warehouse now, without building them."""
    _build(select, vars, target, mode="test")


@app.command()
@_handled
def compile(
    target: str | None = TargetOpt,
    select: list[str] | None = SelectOpt,
    vars: str | None = VarsOpt,
) -> None:
    """Write each model's SQL for a target into target/compiled/<dialect>/ (no connection)."""
    with _context(target, vars) as ctx:
        compiled = ctx.compile(target)
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

    with _context(target) as ctx:
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

    path = out or _state["project_dir"] / "target" / f"seed_{events}_{seed}.ndjson.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _console().status(f"Generating {events:,} events"):
        stats = generate(path, events=events, seed=seed)
    _console().print(f"Generated {stats.events:,} events ({stats.bytes / 1e6:.1f} MB) in "
                  f"{stats.seconds:.1f} s: {stats.events / max(stats.seconds, 1e-9):,.0f} events/s "
                  f"-> {path}")
    if load:
        with _context(target) as ctx:
            result = report.ingest_with_progress(ctx, [path], _console(), sample=True)
        report.print_ingest(result, _console())


@app.command("ls")
@_handled
def ls_(select: list[str] | None = SelectOpt) -> None:
    """List models with their materialization and dependencies."""
    from rich.table import Table

    with _context() as ctx:
        models = ctx.ls(select)
    table = Table("model", "materialized", "depends on", box=None)
    for m in models:
        table.add_row(m.name, m.materialized, ", ".join(m.depends_on))
    _console().print(table)


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
        handle = open(out, "w", newline="") if out else sys.stdout
        try:
            summary = export_cohort(ctx, category, format, handle)
        finally:
            if out:
                handle.close()
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
    from runner.dashboard import render_dashboard

    with _context(target, vars) as ctx:
        path = out if out.is_absolute() else ctx.project_dir / out
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = render_dashboard(ctx, path)
    _console().print(f"Wrote {summary.path} ({len(summary.panels)} panels)")
    if open_:
        import webbrowser

        webbrowser.open(summary.path.resolve().as_uri())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
