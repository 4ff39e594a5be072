"""Issue 16, first contact: `arpu show` prints whole values in key order with the rows it left
out, data never becomes markup; `arpu dashboard` labels itself with the vars of the build it
draws and says when `--vars` differ. Each project is built once per module."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.project import (
    FIXTURES,
    POSTGRES_DSN,
    ProjectHarness,
    run_arpu,
    use_isolated_targets,
)

from runner.artifacts import BuildResult, ModelResult, Shown, write_run_results
from runner.board import render_dashboard
from runner.report import format_number, print_rows

PROMO = "2026-03-09"
BUILD_VARS = {"promo_start": PROMO, "conversion_window_days": 1}
HOSTILE = FIXTURES / "show_hostile.ndjson"
DATA_BLOCK = re.compile(
    r'<script type="application/json" id="arpu-data">(.*?)</script>', re.DOTALL)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> ProjectHarness:
    """The sample, built once by `arpu build --vars` with a promotion and a 1-day window."""
    project = ProjectHarness(tmp_path_factory.mktemp("show") / "project", with_sample=True)
    done = run_arpu(project.root, "build", "--vars", json.dumps(BUILD_VARS))
    assert done.returncode == 0, done.stdout + done.stderr
    return project


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> ProjectHarness:
    """28 messages whose categories are rich markup, escape sequences and bidi overrides."""
    project = ProjectHarness(tmp_path_factory.mktemp("hostile") / "project")
    project.ingest(HOSTILE)
    assert project.build().success
    return project


def _show(project: ProjectHarness, name: str, width: int, limit: int = 20,
          **console: Any) -> tuple[Shown, str]:
    out = io.StringIO()
    with project.context() as ctx:
        shown = ctx.show(name, limit)
    print_rows(shown, "table", Console(width=width, file=out, **console))
    return shown, out.getvalue()


def _text(value: Any) -> str:
    """What a whole value looks like in a table."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return format_number(value) if isinstance(value, float) else str(value)


def _records(text: str) -> list[dict[str, str]]:
    """Parse psql's expanded display back into records (folded values joined)."""
    records: list[dict[str, str]] = []
    column = ""
    for line in text.splitlines():
        if line.startswith("-[ RECORD "):
            records.append({})
        elif records and " |" in line:
            name, _, value = line.partition(" |")
            value = value[1:] if value.startswith(" ") else value
            if name.strip():
                column = name.strip()
                records[-1][column] = value
            else:
                records[-1][column] += value
    return records


def _table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in text.splitlines() if line.startswith("│")]


# -- arpu show -------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("name", ["category_opportunities", "experiment_results"])
def test_show_prints_whole_values_at_any_width(sample: ProjectHarness, name: str,
                                               width: int) -> None:
    shown, text = _show(sample, name, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    expected = [[_text(v) for v in row] for row in shown.rows]
    fits = name == "category_opportunities" and width == 200
    if fits:  # a table when it fits
        assert "-[ RECORD" not in text and "┃ category " in text
        assert _table_rows(text) == expected
    else:  # else psql's expanded display, one block per row
        assert "-[ RECORD 1 ]-" in text and "expanded display" in text
        assert _records(text) == [dict(zip(shown.columns, row, strict=True))
                                  for row in expected]
    assert ("Home Supplies" if name == "category_opportunities" else "home_supplies_promo") in text


def test_show_orders_by_key_and_counts_what_it_left_out(sample: ProjectHarness) -> None:
    done = run_arpu(sample.root, "show", "arpu_timeseries", "--format", "json")
    assert done.returncode == 0, done.stderr
    keys = "grain, period_start, segment"
    every = sample.rows("arpu_timeseries", order_by=keys)
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["grain"], r["period_start"], r["segment"]) for r in shown] == [
        (r["grain"], r["period_start"].isoformat(), r["segment"]) for r in every[:20]]
    assert (f"arpu_timeseries: 20 of {len(every):,} rows, ordered by {keys}; --limit to see "
            "more") in done.stderr
    done = run_arpu(sample.root, "show", "category_funnel", "--limit", "100")
    assert done.returncode == 0, done.stderr
    assert "category_funnel: 8 rows, ordered by category\n" in done.stdout
    assert "--limit" not in done.stdout
    categories = [row[0] for row in _table_rows(done.stdout)]
    assert categories == sorted(categories) and len(categories) == 8
    done = run_arpu(sample.root, "show", "raw_events", "-n", "3", "-f", "json")
    assert [json.loads(line)["record_number"] for line in done.stdout.splitlines()] == [0, 1, 2]


def test_show_numbers_small_in_scientific_notation_counts_as_integers(
        sample: ProjectHarness) -> None:
    shown, text = _show(sample, "experiment_results", 200)
    promo = dict(zip(shown.columns, shown.rows[1], strict=True))
    assert promo["arpu_p_value"] < 1e-3
    record = _records(text)[1]
    assert re.fullmatch(r"\d\.\d*e-\d\d", record["arpu_p_value"])
    assert float(record["arpu_p_value"]) == pytest.approx(promo["arpu_p_value"], rel=1e-2)
    assert record["users"] == str(promo["users"])  # a count, not 2071.0000
    assert "0.0000" not in text


@pytest.mark.parametrize(("value", "text"), [
    (3.2e-07, "3.2e-07"), (-0.000123456, "-0.000123"), (0.22371, "0.2237"), (0.5, "0.5"),
    (0.001, "0.001"), (461.2, "461.20"), (1016484.8, "1,016,484.80"), (0.0, "0"),
    (2.5e15, "2.5e+15"), (float("nan"), "nan")])
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


def test_show_prints_json_as_json_in_every_format(sample: ProjectHarness) -> None:
    done = run_arpu(sample.root, "show", "stg_events", "-n", "50", "-f", "json")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(isinstance(r["properties"], dict) for r in rows)  # nested, not a string
    assert all(r["properties"] is None or isinstance(r["properties"], dict) for r in rows)
    done = run_arpu(sample.root, "show", "stg_events", "-n", "50", "-f", "csv")
    texts = [r["properties"] for r in csv.DictReader(done.stdout.splitlines())]
    assert any(texts) and all(isinstance(json.loads(t), dict) for t in texts if t)


def test_show_never_reads_data_as_markup(hostile: ProjectHarness) -> None:
    done = run_arpu(hostile.root, "show", "category_funnel")
    assert done.returncode == 0, done.stderr
    for literal in ("[/red]", "[link=https://evil.example]x[/link]", "[bold magenta]loud[/]",
                    "\\x1b[31mred\\x1b[0m", "two\\nlines", "\\u202eevil"):
        assert literal in done.stdout, literal
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    # on a colour terminal: no hyperlink (OSC 8), no style from the data
    _, text = _show(hostile, "category_funnel", 200, force_terminal=True,
                    color_system="truecolor")
    assert "\x1b]8;" not in text
    assert "[link=https://evil.example]x[/link]" in text and "[/red]" in text
    assert "\x1b[31mred" not in text


@pytest.mark.postgres
def test_show_prints_postgres_json_as_json(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project")
    use_isolated_targets(project, "show")
    try:
        assert run_arpu(project.root, "ingest", str(HOSTILE), "-t", "postgres").returncode == 0
        done = run_arpu(project.root, "build", "-t", "postgres", "-s", "stg_events")
        assert done.returncode == 0, done.stdout + done.stderr
        csv_out = run_arpu(project.root, "show", "stg_events", "-t", "postgres", "-f", "csv")
        json_out = run_arpu(project.root, "show", "stg_events", "-t", "postgres", "-f", "json")
        table = run_arpu(project.root, "show", "stg_events", "-t", "postgres", "-n", "1")
    finally:
        _drop_schemas("show")
    rows = list(csv.DictReader(csv_out.stdout.splitlines()))
    assert rows and "{'" not in csv_out.stdout
    assert json.loads(rows[0]["properties"])["product_id"] == "p0"
    first = json.loads(json_out.stdout.splitlines()[0])
    assert first["properties"]["product_id"] == "p0"
    assert '"product_id":"p0"' in table.stdout and "{'" not in table.stdout


def _drop_schemas(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as pg:
        for (schema,) in pg.execute("select nspname from pg_namespace where nspname ~ %s",
                                    [rf"^arpu_test_{name}_{os.getpid()}(__work|__next)?$"]
                                    ).fetchall():
            pg.execute(f'drop schema "{schema}" cascade')


# -- arpu dashboard --------------------------------------------------------------------------
def _page(path: Path) -> dict[str, Any]:
    blocks = DATA_BLOCK.findall(path.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    payload: dict[str, Any] = json.loads(blocks[0])
    return payload


def test_board_is_labelled_with_the_vars_of_the_build(sample: ProjectHarness,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "board.html"
    done = run_arpu(sample.root, "dashboard", "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = _page(out)
    notes = {p["id"]: p["note"] for p in page["panels"]}
    figures = {p["id"]: p["figure"] for p in page["panels"]}
    assert "bought one within 1 day " in notes["funnel"]
    assert figures["arpu"]["layout"]["shapes"][0]["x0"] == PROMO
    assert f"promotion start {PROMO}" in notes["arpu"]
    assert f"did not buy before {PROMO}" in notes["cohort"]
    assert "conversion window 1 day" in page["header"]["analysis"]
    assert page["header"]["notes"] == []
    assert page["data"]["promo_start"] == PROMO
    recorded = {r["model"]: json.loads(r["vars"]) for r in sample.rows("arpu_build_info")}
    assert recorded["category_funnel"]["conversion_window_days"] == 1


def test_board_says_when_its_vars_differ_from_the_build(sample: ProjectHarness,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "board.html"
    done = run_arpu(sample.root, "dashboard", "--out", str(out), "--vars",
                    '{"conversion_window_days": 3, "target_category": "Home Suplies"}')
    assert done.returncode == 0, done.stderr
    page = _page(out)
    [note] = page["header"]["notes"]
    assert note.startswith("--vars differ from the published build")
    assert "conversion_window_days 3 given, 1 in the build" in note
    assert "target_category Home Suplies given, not set in the build" in note
    funnel = next(p["note"] for p in page["panels"] if p["id"] == "funnel")
    assert "within 1 day " in funnel  # the page stays the build's


def test_board_says_when_relations_come_from_different_builds(hostile: ProjectHarness,
                                                              tmp_path: Path) -> None:
    """A partial build with other vars, then a build that failed (its run_results.json)."""
    assert hostile.build(["category_funnel"], conversion_window_days=3).success
    failed = BuildResult("duckdb", [ModelResult("category_funnel", "error", error="boom")])
    write_run_results(hostile.root / "target", failed, "duckdb")
    with hostile.context() as ctx:
        render_dashboard(ctx, tmp_path / "board.html")
    page = _page(tmp_path / "board.html")
    mixed, stale = page["header"]["notes"]
    assert mixed.startswith("The relations on this page were built with different vars")
    assert ("conversion_window_days is 3 for category_funnel; 7 for category_opportunities"
            in mixed)
    assert stale.startswith("The last build (") and "failed or did not finish" in stale
    funnel = next(p["note"] for p in page["panels"] if p["id"] == "funnel")
    assert "within 3 days " in funnel
