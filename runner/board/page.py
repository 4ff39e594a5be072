"""The page: `template.html` filled with plotly.js, the panels' sections and the data as JSON in
a `<script type="application/json">` block with `<`, `>` and `&` escaped; the page's script sets
text with textContent and draws with Plotly only."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.board.data import jsonable, read_board
from runner.board.figures import panel_figures
from runner.board.text import currency_symbol, expectations, header, header_notes, panel_notes

if TYPE_CHECKING:
    from runner.context import Context

PANELS: list[tuple[str, str]] = [
    ("funnel", "Which categories do viewers buy from?"),
    ("opportunities", "Which category should we promote?"),
    ("arpu", "Is ARPU going up, and for whom?"),
    ("conversion", "Is conversion improving in each category?"),
    ("experiment", "Did the promotion win the A/B test?"),
    ("cohort", "Whom do we target, and where does the list go?"),
]


@dataclass
class DashboardSummary:
    path: Path
    panels: list[str] = field(default_factory=list)
    series_per_panel: dict[str, int] = field(default_factory=dict)


def script_json(payload: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` survive literally."""
    text = json.dumps(jsonable(payload), ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_dashboard(ctx: Context, out: Path) -> DashboardSummary:
    """Write the dashboard of the current target's published relations to `out`."""
    from plotly.offline import get_plotlyjs

    board = read_board(ctx)
    sym = currency_symbol(board.currency)
    figures, medians = panel_figures(board, sym)
    notes = panel_notes(board, medians, sym)
    series_per_panel = {key: len(fig.data) for key, fig in figures.items()}
    payload = {
        "header": header(board, ctx.target_name,
                         header_notes(board, ctx.config.vars, ctx.var_overrides)),
        "panels": [{"id": key, "title": title, "note": notes[key],
                    "figure": json.loads(figures[key].to_json())} for key, title in PANELS],
        "data": {
            "category_funnel": board.funnel,
            "category_opportunities": board.opps,
            "arpu_timeseries": board.series,
            "category_conversion_timeseries": board.conversion_shown,
            "experiment_results": board.experiments,
            "cohort_sizes": board.cohort_sizes,
            "target_category": board.target,
            "promo_start": board.built.panel["arpu"].promo_start,
            "currency": board.currency,
            "expectations_failed": expectations(board.results)["failed"],
        },
        "series_per_panel": series_per_panel,
    }
    sections = "\n".join(
        f'<section class="panel panel-{key}" id="panel-{key}">'
        f'<h2>{i}. {html.escape(title)}</h2><p class="note"></p>'
        f'<div class="chart" data-panel="{key}"></div></section>'
        for i, (key, title) in enumerate(PANELS, start=1))
    plotly_js = get_plotlyjs()
    if "</script" in plotly_js.lower():  # would end the inline script early
        plotly_js = re.sub(r"</(script)", r"<\\/\1", plotly_js, flags=re.IGNORECASE)
    fills = {"PLOTLY_JS": plotly_js, "DATA_JSON": script_json(payload), "SECTIONS": sections}
    # one pass over the template: inserted text (data included) is never scanned again
    page = re.sub(r"\{\{(PLOTLY_JS|DATA_JSON|SECTIONS)\}\}", lambda m: fills[m.group(1)],
                  _template())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return DashboardSummary(out, [key for key, _ in PANELS], series_per_panel)


def _template() -> str:
    return (Path(__file__).with_name("template.html")).read_text(encoding="utf-8")
