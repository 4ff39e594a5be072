"""`arpu dashboard`: the numbers on the page are the relations' numbers, data never becomes markup,
and the page renders in headless Chromium with no network, no console error and no dialog."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from support.built import Built
from support.project import ROOT, ProjectHarness

from runner.board import DashboardSummary, render_dashboard, script_json
from runner.seed import PROMO_START

CHROMIUM = Path("/usr/bin/chromium")
PROMO = "2026-03-09"
HOSTILE = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "Toys & \"Games\" 'n' <b>more</b>"]
DATA_BLOCK = re.compile(
    r'<script type="application/json" id="arpu-data">(.*?)</script>', re.DOTALL)


def _payload(html: str) -> dict[str, Any]:
    blocks = DATA_BLOCK.findall(html)
    assert len(blocks) == 1
    return json.loads(blocks[0])


def _render(project: ProjectHarness, out: Path, **vars: Any) -> tuple[DashboardSummary, str]:
    with project.context(**vars) as ctx:
        summary = render_dashboard(ctx, out)
    return summary, out.read_text(encoding="utf-8")


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and a == pytest.approx(float(b), rel=1e-9)
    return bool(a == b)


@pytest.fixture(scope="module")
def built_sample(sample_built_with_promo: Built, tmp_path_factory: pytest.TempPathFactory
                 ) -> ProjectHarness:
    """The sample built with promo_start=PROMO (once per session; the tests only read it)."""
    assert PROMO == PROMO_START and sample_built_with_promo.outcome.success
    return sample_built_with_promo.copy(tmp_path_factory.mktemp("dashboard") / "project")


def test_numbers_match_relations(built_sample: ProjectHarness, tmp_path: Path) -> None:
    summary, html = _render(built_sample, tmp_path / "dash.html")  # the build's promo_start
    data = _payload(html)["data"]
    assert summary.panels == ["funnel", "opportunities", "arpu", "conversion", "experiment",
                              "cohort"]
    assert summary.series_per_panel == {"funnel": 3, "opportunities": 2, "arpu": 9,
                                        "conversion": 8, "experiment": 3, "cohort": 1}
    for name, key in [("category_funnel", "category"), ("category_opportunities", "category"),
                      ("experiment_results", "variant")]:
        expected = {r[key]: r for r in built_sample.rows(name)}
        shown = {r[key]: r for r in data[name]}
        assert shown.keys() == expected.keys()
        for k, row in expected.items():
            for column, value in row.items():
                assert _close(shown[k][column], value), (name, k, column)
    series = {(r["grain"], str(r["period_start"]), r["segment"]): r
              for r in built_sample.rows("arpu_timeseries")}
    assert {(r["grain"], r["period_start"], r["segment"]): r["arpu"]
            for r in data["arpu_timeseries"]}.keys() == series.keys()
    for r in data["arpu_timeseries"]:
        assert _close(r["arpu"], series[(r["grain"], r["period_start"], r["segment"])]["arpu"])
    cohort = Counter(r["category"] for r in built_sample.rows("cohort_non_converted"))
    assert {r["category"]: r["users"] for r in data["cohort_sizes"]} == dict(cohort)
    target = [r["category"] for r in built_sample.rows("category_opportunities")
              if r["is_target"]]
    assert data["target_category"] == target[0] == "Home Supplies"
    assert data["promo_start"] == PROMO

    figures = {p["id"]: p["figure"] for p in _payload(html)["panels"]}
    funnel = sorted(built_sample.rows("category_funnel"),
                    key=lambda r: (-r["viewers"], r["category"]))
    assert figures["funnel"]["data"][0]["y"] == [r["viewers"] for r in funnel]
    assert figures["funnel"]["data"][1]["y"] == [r["purchasers"] for r in funnel]
    assert figures["arpu"]["layout"]["shapes"][0]["x0"] == PROMO
    notes = {p["id"]: p["note"] for p in _payload(html)["panels"]}
    assert f"{cohort['Home Supplies']:,} users" in notes["cohort"]
    assert "arpu cohort export --format ndjson" in notes["cohort"]
    assert "At 95% confidence" in notes["experiment"]
    header = _payload(html)["header"]
    assert header["expectations"].startswith("all ") and header["expectations_ok"]
    assert header["notes"] == []  # built with these vars, rendered without --vars
    with built_sample.context() as ctx:  # the header's numbers are board_summary's
        first, last, events = ctx.reader().fetch(
            "select min(event_ts), max(event_ts), count(*) from stg_events")[1][0]
    assert header["events"] == f"{events:,} events"
    assert header["range"] == f"{first:%Y-%m-%d %H:%M} UTC → {last:%Y-%m-%d %H:%M} UTC"
    assert data["currency"] == "USD"


def _hostile_events(path: Path) -> Path:
    lines = []
    n = 0

    def msg(event: str, user: str, ts: str, props: dict[str, Any]) -> None:
        nonlocal n
        n += 1
        lines.append(json.dumps({"type": "track", "event": event, "messageId": f"m{n:04d}",
                                 "userId": user, "timestamp": ts, "properties": props}))

    for c, category in enumerate(HOSTILE + ["Plain"]):
        for u in range(4):
            user = f"user_{c}_{u}"
            product = {"product_id": f"p{c}", "sku": f"S{c}", "category": category,
                       "name": f"thing {c}", "price": 10.0 + c, "quantity": 1}
            msg("Product Viewed", user, f"2026-02-0{u + 1}T10:00:00Z", product)
            if u < 2:
                msg("Order Completed", user, f"2026-02-0{u + 1}T11:00:00Z",
                    {"order_id": f"o{c}{u}", "revenue": 10.0 + c, "currency": "USD",
                     "products": [product]})
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> ProjectHarness:
    root = tmp_path_factory.mktemp("hostile")
    project = ProjectHarness(root / "project")
    project.ingest(_hostile_events(root / "hostile.ndjson"))
    assert project.build().success
    return project


def test_hostile_category_names_stay_text(hostile_project: ProjectHarness,
                                          tmp_path: Path) -> None:
    stored = {r["category"] for r in hostile_project.rows("category_funnel")}
    assert set(HOSTILE) <= stored  # verbatim in the warehouse
    summary, html = _render(hostile_project, tmp_path / "dash.html")
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "<b>more</b>" not in html
    # exactly our three scripts: the JSON block, plotly.js, the page's own
    assert len(re.findall(r"<script\b", html)) == 3
    payload = _payload(html)
    assert set(HOSTILE) <= {r["category"] for r in payload["data"]["category_funnel"]}
    assert summary.series_per_panel["experiment"] == 0  # no experiment in these events


def test_board_says_when_board_summary_is_not_published(tmp_path: Path) -> None:
    """A warehouse published by an arpu that predates board_summary: the other panels draw."""
    project = ProjectHarness(tmp_path / "project")
    project.ingest(_hostile_events(tmp_path / "hostile.ndjson"))
    assert project.build().success
    with duckdb.connect(str(project.root / "arpu.duckdb")) as con:
        con.execute("drop table board_summary")
    summary, html = _render(project, tmp_path / "dash.html")
    payload = _payload(html)
    [note] = payload["header"]["notes"]
    assert note.startswith("board_summary is not published") and "arpu build" in note
    assert payload["data"]["cohort_sizes"] == []
    assert summary.series_per_panel["funnel"] == 3


def test_script_json_escapes_markup() -> None:
    text = script_json({"a": "</script><b>&amp;"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><b>&amp;"}


# -- the browser -----------------------------------------------------------------------------
def _browser() -> Any:
    """Playwright's sync API on Debian's Chromium; missing is a failure in CI, a skip here."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install playwright)"
    if missing is None and not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


def _open(path: Path, screenshot: Path | None = None) -> dict[str, Any]:
    sync_playwright = _browser()
    seen: dict[str, Any] = {"errors": [], "requests": [], "dialogs": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: m.type in ("error", "warning") and
                    seen["errors"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: seen["errors"].append(f"pageerror: {e}"))
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
            page.goto(path.resolve().as_uri())
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot').length === 6")
            page.wait_for_timeout(300)
            seen["traces"] = page.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".map(e => [e.dataset.panel, e.data.length])")
            seen["svg_text"] = page.evaluate(
                "Array.from(document.querySelectorAll('svg text')).map(t => t.textContent)")
            seen["header"] = page.inner_text("header")
            seen["img"] = page.evaluate("document.querySelectorAll('main img').length")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
                page.screenshot(path=str(screenshot.with_name(screenshot.stem + "_full.png")),
                                full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.slow
def test_browser_renders_sample(built_sample: ProjectHarness) -> None:
    out = built_sample.root / "target" / "dashboard.html"
    summary, _ = _render(built_sample, out, promo_start=PROMO)
    shot = built_sample.root / "target" / "dashboard.png"
    seen = _open(out, shot)
    assert seen["errors"] == []
    assert [u for u in seen["requests"] if not u.startswith("file://")] == []
    assert seen["dialogs"] == []
    assert seen["traces"] == [[p, summary.series_per_panel[p]] for p in summary.panels]
    assert "all " in seen["header"] and "expectations passed" in seen["header"]
    assert "Home Supplies" in seen["svg_text"]
    assert shot.stat().st_size > 10_000
    keep = ROOT / "target"  # where people look for it (gitignored)
    keep.mkdir(exist_ok=True)
    shutil.copy(shot, keep / "dashboard.png")
    shutil.copy(shot.with_name("dashboard_full.png"), keep / "dashboard_full.png")


@pytest.mark.slow
def test_browser_hostile_names_are_text(hostile_project: ProjectHarness,
                                        tmp_path: Path) -> None:
    out = tmp_path / "hostile.html"
    summary, _ = _render(hostile_project, out)
    seen = _open(out, tmp_path / "hostile.png")
    assert seen["dialogs"] == []
    assert seen["errors"] == []
    assert [u for u in seen["requests"] if not u.startswith("file://")] == []
    assert seen["img"] == 0
    assert seen["traces"] == [[p, summary.series_per_panel[p]] for p in summary.panels]
    for name in HOSTILE:  # drawn verbatim as SVG text (an axis tick or a legend entry)
        assert name in seen["svg_text"], name
