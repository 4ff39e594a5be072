"""`arpu dashboard`: one self-contained HTML file (plotly.js inlined, no network) over the
published relations: funnel, opportunities, ARPU over time, conversion over time, the experiment
readout and the cohort. Data travels to the page as JSON in a `<script type="application/json">`
block with `<`, `>` and `&` escaped; the page sets text with textContent and Plotly only.

The page describes the build it draws: its labels (conversion window, promotion start, target)
come from the vars each relation was published with (`arpu_build_info`), not from the vars
`arpu dashboard` was given; when those differ, or the relations were built with different
vars, the page says so."""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.artifacts import BUILD_INFO
from runner.errors import ArpuError

if TYPE_CHECKING:
    from runner.config import Vars
    from runner.context import Context

Row = dict[str, Any]

SEGMENT_COLOURS = {"all": "#3b4a6b", "cohort": "#d1495b", "non_cohort": "#00798c"}
CATEGORY_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
VIEWERS_COLOUR, PURCHASERS_COLOUR, RATE_COLOUR = "#a9bcd0", "#2b5c8a", "#e07a1f"
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
GRAINS = ("day", "week", "month")
SEGMENTS = ("all", "cohort", "non_cohort")

# the relation each panel draws (whose vars label it)
PANEL_MODELS = {"funnel": "category_funnel", "opportunities": "category_opportunities",
                "arpu": "arpu_timeseries", "conversion": "category_conversion_timeseries",
                "experiment": "experiment_results", "cohort": "cohort_non_converted"}

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


# -- helpers ---------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def script_json(payload: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` survive literally."""
    text = json.dumps(_jsonable(payload), ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def plot_text(value: Any) -> str:
    """A data string as Plotly text: Plotly reads a few HTML-like tags and entities in labels,
    so escape them; Plotly decodes the entities back and draws the verbatim text."""
    return (str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _pct(value: Any, digits: int = 1) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number * 100:.{digits}f}%"


def _money(value: Any, symbol: str) -> str:
    number = _num(value)
    if number is None:
        return "n/a"
    sign = "-" if number < 0 else ""
    return f"{sign}{symbol}{abs(number):,.2f}"


def _pvalue(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "n/a"
    return "< 0.001" if number < 0.001 else f"{number:.3f}"


def _p(value: Any) -> str:
    text = _pvalue(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _ts(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _whole_ticks(top: float) -> dict[str, Any]:
    """Counts have whole ticks: no `0 1 1 2` when the axis spans a few users."""
    return {"dtick": 1} if top < 8 else {}


def _category_colours(categories: list[str]) -> dict[str, str]:
    return {c: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)]
            for i, c in enumerate(sorted(categories))}


def _base_layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "height": 360,
        "margin": {"l": 64, "r": 24, "t": 28, "b": 64},
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                 "size": 12},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        "hoverlabel": {"namelength": -1},
    }
    layout.update(extra)
    return layout


def _empty(fig: Any, message: str) -> None:
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False},
                      annotations=[{"text": plot_text(message), "showarrow": False,
                                    "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                                    "font": {"size": 14, "color": "#666"}}])


def _safe_rows(ctx: Context, name: str, order_by: str | None = None) -> list[Row]:
    try:
        return ctx.rows(name, order_by)
    except Exception:  # not built (yet): the panel says so instead of failing the page
        return []


def _fetch(ctx: Context, sql: str) -> tuple[list[str], list[tuple]]:
    try:
        return ctx.reader().fetch(ctx.sql_for_target(sql))
    except Exception:
        return [], []


def _run_results(ctx: Context) -> dict[str, Any]:
    path = ctx.target_dir / "run_results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _built_at(results: dict[str, Any]) -> str:
    stamp = results.get("metadata", {}).get("generated_at")
    try:
        return _ts(dt.datetime.fromisoformat(stamp)) if stamp else "n/a"
    except ValueError:
        return str(stamp)


def _stale_results(results: dict[str, Any], published_at: dt.datetime | None) -> list[str]:
    """A build that ran after the published one and did not publish: say what the page shows."""
    stamp = results.get("metadata", {}).get("generated_at")
    if not stamp or published_at is None or results.get("success", True):
        return []
    try:
        ran = dt.datetime.fromisoformat(stamp).astimezone(dt.timezone.utc).replace(tzinfo=None)
    except ValueError:
        return []
    if ran < published_at:  # (both to the second: a failed run_results is never older)
        return []
    return [f"The last build ({_ts(ran)}) failed or did not finish: this page shows the build "
            f"published {_ts(published_at)}; the expectations line is the failed build's."]


def _expectations(results: dict[str, Any]) -> dict[str, Any]:
    total, failed = 0, []
    for model in results.get("results", []):
        for exp in model.get("expectations") or []:
            total += 1
            if not exp.get("success"):
                failed.append({"model": model.get("model"), "expectation": exp.get("expectation"),
                               "severity": exp.get("severity")})
    if not results:
        text = "no build results (run `arpu build`)"
    elif not total:
        text = "not validated"
    elif not failed:
        text = f"all {total} expectations passed"
    else:
        text = f"{len(failed)} of {total} failed: " + "; ".join(
            f"{f['model']}: {f['expectation']} ({f['severity']})" for f in failed[:5]) + (
            " …" if len(failed) > 5 else "")
    return {"total": total, "failed": failed, "text": text, "ok": bool(total) and not failed}


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _var_text(value: Any) -> str:
    return "not set" if value is None else value if isinstance(value, str) else json.dumps(value)


@dataclass
class BuildVars:
    """The vars behind the page: per panel, those its relation was built with (else the
    current ones, for a build that did not record them), and what the page must say about
    them (`notes`)."""

    panel: dict[str, Vars]
    main: Vars  # the vars most of the page's relations were built with
    recorded: bool
    published_at: dt.datetime | None = None  # when the newest of them was built
    notes: list[str] = field(default_factory=list)


def build_vars(ctx: Context) -> BuildVars:
    from runner.config import Vars

    recorded: dict[str, dict[str, Any]] = {}
    stamps = []
    for row in _safe_rows(ctx, BUILD_INFO):
        if isinstance(row.get("built_at"), dt.datetime):
            stamps.append(row["built_at"])
        try:
            data = json.loads(row["vars"]) if row.get("vars") else None
        except ValueError:
            data = None
        if isinstance(data, dict):
            recorded[str(row["model"])] = {k: v for k, v in data.items() if k in Vars.model_fields}
    current = ctx.config.vars
    panel = {key: Vars.model_validate(recorded[model]) if model in recorded else current
             for key, model in PANEL_MODELS.items()}
    shown = {model: recorded[model] for model in PANEL_MODELS.values() if model in recorded}
    texts = [json.dumps(v, sort_keys=True) for v in shown.values()]
    main = (Vars.model_validate(json.loads(statistics.mode(texts))) if texts else current)
    result = BuildVars(panel, main, bool(shown), max(stamps, default=None))
    if not shown:
        return result
    if len(shown) < len(PANEL_MODELS):
        missing = [m for m in PANEL_MODELS.values() if m not in shown]
        result.notes.append(f"The vars of {', '.join(missing)} were not recorded (published "
                            "by an earlier arpu or build): their labels follow arpu.yml.")
    varying = [key for key in Vars.model_fields
               if len({json.dumps(v.get(key)) for v in shown.values()}) > 1]
    if varying:
        parts = []
        for key in varying:
            by_value: dict[str, list[str]] = {}
            for model, values in shown.items():
                by_value.setdefault(_var_text(values.get(key)), []).append(model)
            parts.append(f"{key} is " + "; ".join(f"{value} for {', '.join(models)}"
                                                for value, models in by_value.items()))
        result.notes.append("The relations on this page were built with different vars (a "
                            "partial `arpu build --select`): " + ". ".join(parts)
                            + ". Run `arpu build` to rebuild them together.")
    given = current.model_dump(mode="json")
    differ = []
    for key in getattr(ctx, "var_overrides", {}):
        built = sorted({_var_text(v.get(key)) for v in shown.values()})
        if key in given and built != [_var_text(given[key])]:
            differ.append(f"{key} {_var_text(given[key])} given, {' / '.join(built)} in the build")
    if differ:
        result.notes.append(
            f"--vars differ from the published build ({_ts(result.published_at)}) that this "
            "page draws: "
            + "; ".join(differ) + ". The numbers and labels are the build's; run `arpu build` "
            "with these --vars to see yours.")
    return result


# -- the figures -----------------------------------------------------------------------------
def _funnel_figure(go: Any, funnel: list[Row], sym: str) -> Any:
    fig = go.Figure()
    rows = sorted(funnel, key=lambda r: (-(r["viewers"] or 0), str(r["category"])))
    if not rows:
        _empty(fig, "No product views in the analysis range")
        fig.update_layout(_base_layout())
        return fig
    cats = [plot_text(r["category"]) for r in rows]
    rates = [_num(r["conversion_rate"]) for r in rows]
    fig.add_bar(name="Viewers", x=cats, y=[r["viewers"] for r in rows],
                marker_color=VIEWERS_COLOUR, hovertemplate="%{x}<br>%{y:,} viewers<extra></extra>")
    fig.add_bar(name="Purchasers", x=cats, y=[r["purchasers"] for r in rows],
                marker_color=PURCHASERS_COLOUR,
                hovertemplate="%{x}<br>%{y:,} purchasers<extra></extra>")
    fig.add_scatter(name="Conversion", x=cats, y=rates, yaxis="y2", mode="markers+text",
                    marker={"color": RATE_COLOUR, "size": 9, "symbol": "diamond"},
                    text=[_pct(v, 0) for v in rates], textposition="top center",
                    textfont={"color": RATE_COLOUR, "size": 11},
                    hovertemplate="%{x}<br>conversion %{y:.1%}<extra></extra>")
    top = max([v for v in rates if v is not None] or [1.0])
    fig.update_layout(_base_layout(
        barmode="group", bargap=0.25,
        yaxis={"title": {"text": "users"}, "tickformat": ",d", "rangemode": "tozero",
               **_whole_ticks(max(r["viewers"] or 0 for r in rows))},
        yaxis2={"title": {"text": "conversion"}, "overlaying": "y", "side": "right",
                "tickformat": ".0%", "range": [0, math.ceil(top * 13) / 10],
                "dtick": 0.2 if top > 0.5 else 0.1, "showgrid": False},
        xaxis={"tickangle": -30, "automargin": True},
        margin={"l": 64, "r": 64, "t": 28, "b": 64},
    ))
    return fig


def _opportunity_figure(go: Any, opps: list[Row], colours: dict[str, str], sym: str
                        ) -> tuple[Any, dict[str, Any]]:
    fig = go.Figure()
    rows = [r for r in opps if _num(r.get("avg_item_price")) is not None
            and _num(r.get("conversion_rate")) is not None]
    info: dict[str, Any] = {"median_price": None, "median_conversion": None}
    if not rows:
        _empty(fig, "No purchased categories to compare yet")
        fig.update_layout(_base_layout())
        return fig, info
    prices = [float(r["avg_item_price"]) for r in rows]
    rates = [float(r["conversion_rate"]) for r in rows]
    med_price, med_rate = statistics.median(prices), statistics.median(rates)
    info = {"median_price": med_price, "median_conversion": med_rate}
    x_lo, x_hi = min(prices), max(prices)
    y_lo, y_hi = min(rates), max(rates)
    x_pad, y_pad = (x_hi - x_lo) * 0.12 or 10.0, (y_hi - y_lo) * 0.15 or 0.05
    x_range, y_range = [x_lo - x_pad, x_hi + x_pad], [max(0.0, y_lo - y_pad), y_hi + y_pad]
    hover = [f"{plot_text(r['category'])}<br>conversion {_pct(r['conversion_rate'])}"
             f"<br>avg item price {_money(r['avg_item_price'], sym)}"
             f"<br>revenue at stake {_money(r.get('revenue_at_stake'), sym)}"
             f"<br>rank {r.get('rank')}" for r in rows]
    positions = _place_labels([str(r["category"]) for r in rows], prices, rates, x_range,
                              y_range, [i for i, r in enumerate(rows) if r.get("is_target")])
    fig.add_scatter(name="Categories", x=prices, y=rates, mode="markers+text",
                    text=[plot_text(r["category"]) for r in rows], textposition=positions,
                    textfont={"size": 11},
                    marker={"size": 13, "color": [colours.get(str(r["category"]), "#888")
                                                  for r in rows],
                            "line": {"width": 1, "color": "#fff"}},
                    hovertext=hover, hoverinfo="text", showlegend=False)
    target = [r for r in rows if r.get("is_target")]
    fig.add_scatter(name="Recommended", x=[float(r["avg_item_price"]) for r in target],
                    y=[float(r["conversion_rate"]) for r in target], mode="markers",
                    marker={"size": 26, "color": "rgba(0,0,0,0)", "symbol": "circle",
                            "line": {"width": 3, "color": "#d1495b"}},
                    hovertext=[f"Recommended: {plot_text(r['category'])}" for r in target],
                    hoverinfo="text", showlegend=True)
    fig.update_layout(_base_layout(
        xaxis={"title": {"text": "average item price"}, "tickprefix": sym, "tickformat": ",.0f",
               "range": x_range, "zeroline": False},
        yaxis={"title": {"text": "view → purchase conversion"}, "tickformat": ".0%",
               "range": y_range, "zeroline": False},
        shapes=[
            {"type": "rect", "xref": "x", "yref": "y", "x0": med_price, "x1": x_range[1],
             "y0": y_range[0], "y1": med_rate, "fillcolor": "rgba(209,73,91,0.08)",
             "line": {"width": 0}, "layer": "below"},
            {"type": "line", "xref": "x", "yref": "paper", "x0": med_price, "x1": med_price,
             "y0": 0, "y1": 1, "line": {"dash": "dot", "color": "#999", "width": 1}},
            {"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": med_rate,
             "y1": med_rate, "line": {"dash": "dot", "color": "#999", "width": 1}},
        ],
        annotations=[{"text": "low conversion · high price", "xref": "x", "yref": "y",
                      "x": x_range[1], "y": y_range[0], "xanchor": "right",
                      "yanchor": "bottom", "showarrow": False,
                      "font": {"color": "#d1495b", "size": 11}}],
    ))
    return fig, info


def _place_labels(labels: list[str], xs: list[float], ys: list[float], x_range: list[float],
                  y_range: list[float], ringed: list[int], width: float = 500.0,
                  height: float = 240.0) -> list[str]:
    """Greedy label placement in estimated pixels: each label takes the first side (above,
    below, right, left) that overlaps no marker, ring or earlier label."""
    def px(i: int) -> tuple[float, float]:
        return ((xs[i] - x_range[0]) / ((x_range[1] - x_range[0]) or 1) * width,
                (ys[i] - y_range[0]) / ((y_range[1] - y_range[0]) or 1) * height)

    boxes: list[tuple[float, float, float, float]] = []
    for i in range(len(xs)):
        x, y = px(i)
        r = 15.0 if i in ringed else 7.0
        boxes.append((x - r, y - r, x + r, y + r))
    placed: dict[int, str] = {}
    for i in sorted(range(len(xs)), key=lambda i: (i not in ringed, ys[i])):
        x, y = px(i)
        w, h = 6.2 * min(len(labels[i]), 60) + 4, 14.0
        gap = 17.0 if i in ringed else 9.0
        options = {"top center": (x - w / 2, y + gap, x + w / 2, y + gap + h),
                   "bottom center": (x - w / 2, y - gap - h, x + w / 2, y - gap),
                   "middle right": (x + gap, y - h / 2, x + gap + w, y + h / 2),
                   "middle left": (x - gap - w, y - h / 2, x - gap, y + h / 2)}

        def clashes(box: tuple[float, float, float, float]) -> float:
            hits = sum(1 for b in boxes if box[0] < b[2] and b[0] < box[2]
                       and box[1] < b[3] and b[1] < box[3])
            outside = box[0] < 0 or box[2] > width or box[1] < 0 or box[3] > height
            return hits + (0.5 if outside else 0)

        best = min(options, key=lambda k: (clashes(options[k]), list(options).index(k)))
        boxes.append(options[best])
        placed[i] = best
    return [placed[i] for i in range(len(xs))]


def _arpu_figure(go: Any, series: list[Row], promo_start: Any, sym: str, default: str) -> Any:
    fig = go.Figure()
    if not series:
        _empty(fig, "No activity in the analysis range")
        fig.update_layout(_base_layout())
        return fig
    for grain in GRAINS:
        for segment in SEGMENTS:
            rows = sorted((r for r in series if r["grain"] == grain and r["segment"] == segment),
                          key=lambda r: r["period_start"])
            fig.add_scatter(
                name=segment.replace("_", "-"), legendgroup=segment,
                x=[_jsonable(r["period_start"]) for r in rows], y=[_num(r["arpu"]) for r in rows],
                mode="lines+markers" if grain != "day" else "lines",
                line={"color": SEGMENT_COLOURS[segment], "width": 2.5 if segment == "all" else 2},
                marker={"size": 5}, visible=grain == default,
                customdata=[[r["active_users"], _num(r["revenue"])] for r in rows],
                hovertemplate=(f"{segment} · %{{x|%Y-%m-%d}} ({grain})<br>ARPU {sym}%{{y:,.2f}}"
                               f"<br>revenue {sym}%{{customdata[1]:,.0f}}"
                               "<br>active users %{customdata[0]:,}<extra></extra>"))
    buttons = [{"label": grain, "method": "update",
                "args": [{"visible": [g == grain for g in GRAINS for _ in SEGMENTS]}]}
               for grain in GRAINS]
    layout = _base_layout(
        yaxis={"title": {"text": "ARPU (revenue per active user)"}, "tickprefix": sym,
               "tickformat": ",.0f", "rangemode": "tozero"},
        xaxis={"type": "date"},
        updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons,
                      "active": GRAINS.index(default), "x": 1, "xanchor": "right", "y": 1.02,
                      "yanchor": "bottom", "pad": {"r": 0, "t": 0}, "showactive": True,
                      "font": {"size": 11}}],
    )
    if promo_start:
        day = _jsonable(promo_start)
        layout["shapes"] = [{"type": "line", "xref": "x", "yref": "paper", "x0": day, "x1": day,
                             "y0": 0, "y1": 1, "line": {"color": "#d1495b", "dash": "dash"}}]
        layout["annotations"] = [{"text": f"promo start {day}", "xref": "x", "yref": "paper",
                                  "x": day, "y": 1, "xanchor": "left", "yanchor": "top",
                                  "showarrow": False, "font": {"color": "#d1495b", "size": 11}}]
    fig.update_layout(layout)
    return fig


def _conversion_figure(go: Any, series: list[Row], colours: dict[str, str],
                       target: str | None, grain: str) -> Any:
    fig = go.Figure()
    if not series:
        _empty(fig, "No product views in the analysis range")
        fig.update_layout(_base_layout())
        return fig
    categories = sorted({str(r["category"]) for r in series},
                        key=lambda c: (c != target, c))
    for cat in categories:
        rows = sorted((r for r in series if str(r["category"]) == cat),
                      key=lambda r: r["period_start"])
        is_target = cat == target
        label = plot_text(cat) + (" (target)" if is_target else "")
        fig.add_scatter(name=label, x=[_jsonable(r["period_start"]) for r in rows],
                        y=[_num(r["conversion_rate"]) for r in rows], mode="lines",
                        line={"color": colours.get(cat, "#888"), "width": 4 if is_target else 1.5},
                        opacity=1.0 if is_target else 0.55,
                        customdata=[[r["viewers"], r["purchasers"]] for r in rows],
                        hovertemplate=(f"{label} · %{{x|%Y-%m-%d}} ({grain})<br>"
                                       "conversion %{y:.1%}<br>%{customdata[1]:,} of "
                                       "%{customdata[0]:,} viewers<extra></extra>"))
    fig.update_layout(_base_layout(
        height=380,
        yaxis={"title": {"text": f"conversion per {grain}"}, "tickformat": ".0%",
               "rangemode": "tozero"},
        xaxis={"type": "date"},
        legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top",
                "font": {"size": 11}},
        margin={"l": 64, "r": 24, "t": 28, "b": 48},
    ))
    return fig


def _experiment_figure(go: Any, results: list[Row], sym: str) -> tuple[Any, list[str]]:
    from plotly.subplots import make_subplots

    verdicts: list[str] = []
    if not results:
        fig = go.Figure()
        _empty(fig, "No experiment exposures in the data")
        fig.update_layout(_base_layout())
        return fig, ["No experiment has been run on these data."]
    several = len({r["experiment"] for r in results}) > 1
    rows = sorted(results, key=lambda r: (str(r["experiment"]), not r.get("is_control"),
                                          str(r["variant"])))

    def label(r: Row) -> str:
        name = plot_text(r["variant"]) + (" (control)" if r.get("is_control") else "")
        return f"{plot_text(r['experiment'])} · {name}" if several else name

    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=(
        "ARPU per variant", "conversion per variant", "ARPU difference vs control, 95% CI"))
    colours = ["#8c9bb0" if r.get("is_control") else "#2b5c8a" for r in rows]
    fig.add_bar(name="ARPU", x=[label(r) for r in rows], y=[_num(r["arpu"]) for r in rows],
                marker_color=colours, text=[_money(r["arpu"], sym) for r in rows],
                textposition="auto", showlegend=False,
                customdata=[[r["users"]] for r in rows],
                hovertemplate=f"%{{x}}<br>ARPU {sym}%{{y:,.2f}}<br>%{{customdata[0]:,}} users"
                              "<extra></extra>", row=1, col=1)
    fig.add_bar(name="Conversion", x=[label(r) for r in rows],
                y=[_num(r["conversion_rate"]) for r in rows], marker_color=colours,
                text=[_pct(r["conversion_rate"]) for r in rows], textposition="auto",
                showlegend=False, hovertemplate="%{x}<br>conversion %{y:.1%}<extra></extra>",
                row=1, col=2)
    treated = [r for r in rows if not r.get("is_control")]
    controls = {str(r["experiment"]): r for r in rows if r.get("is_control")}
    diffs, plus, minus = [], [], []
    for r in treated:
        control = controls.get(str(r["experiment"]))
        diff = _num(r.get("arpu_diff"))
        if diff is None and control is not None and None not in (_num(r["arpu"]),
                                                                 _num(control["arpu"])):
            diff = float(r["arpu"]) - float(control["arpu"])
        low, high = _num(r.get("arpu_ci_low")), _num(r.get("arpu_ci_high"))
        diffs.append(diff)
        plus.append(None if diff is None or high is None else high - diff)
        minus.append(None if diff is None or low is None else diff - low)
        verdicts.append(_verdict(r, control, sym, low, high))
    fig.add_scatter(name="ARPU difference", x=[label(r) for r in treated], y=diffs,
                    mode="markers", marker={"size": 11, "color": "#2b5c8a"},
                    error_y={"type": "data", "array": plus, "arrayminus": minus,
                             "color": "#2b5c8a", "thickness": 2, "width": 8},
                    showlegend=False,
                    customdata=[[_pct(r.get("arpu_uplift")), _pvalue(r.get("arpu_p_value")),
                                 _pvalue(r.get("conversion_p_value"))] for r in treated],
                    hovertemplate=(f"%{{x}}<br>difference {sym}%{{y:,.2f}}<br>uplift "
                                   "%{customdata[0]}<br>ARPU p = %{customdata[1]}<br>"
                                   "conversion p = %{customdata[2]}<extra></extra>"),
                    row=1, col=3)
    fig.add_hline(y=0, line={"color": "#999", "dash": "dot", "width": 1}, row=1, col=3)
    fig.update_layout(_base_layout(margin={"l": 64, "r": 24, "t": 40, "b": 56}))
    fig.update_yaxes(tickprefix=sym, tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(tickprefix=sym, tickformat=",.0f", zeroline=True, row=1, col=3)
    fig.update_annotations(font={"size": 12})
    return fig, verdicts


def _verdict(r: Row, control: Row | None, sym: str, low: float | None, high: float | None
             ) -> str:
    name = str(r["variant"])
    base = str(control["variant"]) if control else "control"
    uplift = _num(r.get("arpu_uplift"))
    p_arpu, p_conv = _num(r.get("arpu_p_value")), _num(r.get("conversion_p_value"))
    head = (f"{r['experiment']}: {name} vs {base}: ARPU "
            f"{_money(r['arpu'], sym)} vs {_money(control['arpu'], sym) if control else 'n/a'}"
            f" ({'+' if (uplift or 0) >= 0 else ''}{_pct(uplift)}, {_p(p_arpu)}, "
            f"95% CI of the difference {_money(low, sym)} to {_money(high, sym)}); conversion "
            f"{_pct(r['conversion_rate'])} vs "
            f"{_pct(control['conversion_rate']) if control else 'n/a'} "
            f"({_p(p_conv)}). ")
    if p_arpu is None:
        return head + "Not enough data for a verdict."
    if p_arpu < 0.05:
        better = (uplift or 0) > 0
        return head + (f"At 95% confidence, {name} {'raises' if better else 'lowers'} ARPU: "
                       f"{'ship it' if better else 'do not ship it'}.")
    return head + (f"At 95% confidence there is no detectable ARPU difference between {name} "
                   f"and {base}: keep collecting data or treat it as neutral.")


def _cohort_figure(go: Any, sizes: list[Row], colours: dict[str, str], target: str | None
                   ) -> Any:
    fig = go.Figure()
    if not sizes:
        _empty(fig, "No non-converted viewers")
        fig.update_layout(_base_layout(height=300))
        return fig
    rows = sorted(sizes, key=lambda r: -int(r["users"]))
    fig.add_bar(name="Non-converted viewers", x=[int(r["users"]) for r in rows],
                y=[plot_text(r["category"]) for r in rows], orientation="h",
                marker={"color": [colours.get(str(r["category"]), "#888") for r in rows],
                        "line": {"width": [3 if str(r["category"]) == target else 0
                                           for r in rows], "color": "#d1495b"}},
                text=[f"{int(r['users']):,}" + ("  ← target" if str(r["category"]) == target
                                                else "") for r in rows],
                textposition="outside", cliponaxis=False,
                hovertemplate="%{y}<br>%{x:,} users viewed and did not buy<extra></extra>")
    fig.update_layout(_base_layout(
        height=max(240, 34 * len(rows) + 70),
        xaxis={"title": {"text": "users in the cohort"}, "tickformat": ",d",
               **_whole_ticks(max(int(r["users"]) for r in rows)),
               "range": [0, max(int(r["users"]) for r in rows) * 1.25]},
        yaxis={"autorange": "reversed", "automargin": True},
        margin={"l": 24, "r": 24, "t": 16, "b": 48}, bargap=0.3,
    ))
    return fig


# -- the page --------------------------------------------------------------------------------
def _gather(ctx: Context) -> dict[str, Any]:
    # a warehouse that cannot be read is an error, not a page of empty panels: the reader
    # raises its own one-line error (no published file, no connection)
    reader = ctx.reader()
    if not reader.relation_exists("stg_events"):
        raise ArpuError(f"nothing is published on target '{ctx.target_name}' yet: "
                        "run `arpu build`")
    compiler = ctx.compiler()
    funnel = _safe_rows(ctx, "category_funnel", "category")
    opps = _safe_rows(ctx, "category_opportunities", "category")
    series = _safe_rows(ctx, "arpu_timeseries", "grain, segment, period_start")
    conversion = _safe_rows(ctx, "category_conversion_timeseries",
                            "grain, category, period_start")
    experiments = _safe_rows(ctx, "experiment_results", "experiment, variant")
    cohort_rel = compiler.published_relation("cohort_non_converted")
    cols, rows = _fetch(ctx, f"select category, count(distinct user_key) as users "
                             f"from {cohort_rel} group by category order by category")
    cohort_sizes = [dict(zip(cols, r, strict=True)) for r in rows]
    stg = compiler.published_relation("stg_events")
    _, span = _fetch(ctx, f"select min(event_ts), max(event_ts), count(*) from {stg}")
    orders = compiler.published_relation("fct_orders")
    _, cur = _fetch(ctx, f"select currency, count(*) as n from {orders} "
                         "where currency is not null group by currency order by n desc limit 1")
    return {"funnel": funnel, "opps": opps, "series": series, "conversion": conversion,
            "experiments": experiments, "cohort_sizes": cohort_sizes,
            "span": span[0] if span else (None, None, 0),
            "currency": str(cur[0][0]) if cur else "USD"}


def render_dashboard(ctx: Context, out: Path) -> DashboardSummary:
    """Write the dashboard of the current target's published relations to `out`."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    got = _gather(ctx)
    currency = got["currency"]
    sym = CURRENCY_SYMBOLS.get(currency.upper(), f"{currency} ")
    results = _run_results(ctx)
    built = build_vars(ctx)
    stale = _stale_results(results, built.published_at)
    built.notes += stale
    if results and not stale:
        built_text = (f"{_ts(built.published_at) if built.published_at else _built_at(results)}"
                      f" ({results.get('elapsed_seconds', 0):.1f} s, target "
                      f"{results.get('metadata', {}).get('target', ctx.target_name)})")
    else:
        built_text = _ts(built.published_at) if built.published_at else "not built"
    vars_ = built.main
    promo_start = built.panel["arpu"].promo_start
    categories = sorted({str(r["category"]) for r in got["funnel"]}
                        | {str(r["category"]) for r in got["opps"]}
                        | {str(r["category"]) for r in got["cohort_sizes"]})
    colours = _category_colours(categories)
    targets = [r for r in got["opps"] if r.get("is_target")]
    if not targets:
        targets = [r for r in got["opps"] if r.get("rank") == 1]
    target = str(targets[0]["category"]) if targets else None
    grains_present = {r["grain"] for r in got["series"]}
    periods = {r["period_start"] for r in got["series"] if r["grain"] == "week"}
    default_grain = "week" if len(periods) >= 4 else "day"
    if default_grain not in grains_present and grains_present:
        default_grain = sorted(grains_present)[0]
    conv_grain = default_grain
    conversion = [r for r in got["conversion"]
                  if r["segment"] == "all" and r["grain"] == conv_grain]

    funnel_fig = _funnel_figure(go, got["funnel"], sym)
    opp_fig, medians = _opportunity_figure(go, got["opps"], colours, sym)
    arpu_fig = _arpu_figure(go, got["series"], promo_start, sym, default_grain)
    conv_fig = _conversion_figure(go, conversion, colours, target, conv_grain)
    exp_fig, verdicts = _experiment_figure(go, got["experiments"], sym)
    cohort_fig = _cohort_figure(go, got["cohort_sizes"], colours, target)
    figures = {"funnel": funnel_fig, "opportunities": opp_fig, "arpu": arpu_fig,
               "conversion": conv_fig, "experiment": exp_fig, "cohort": cohort_fig}

    expectations = _expectations(results)
    first, last, events = got["span"]
    target_size = next((int(r["users"]) for r in got["cohort_sizes"]
                        if str(r["category"]) == target), 0)
    target_row = targets[0] if targets else {}
    lead = ("Target (var target_category)" if built.panel["opportunities"].target_category
            else "Recommended")
    notes = {
        "funnel": "Users who viewed a product of the category and bought one within "
                  f"{_days(built.panel['funnel'].conversion_window_days)} (bars), and the "
                  "conversion (diamonds).",
        "opportunities": (
            f"{lead}: {target} — conversion {_pct(target_row.get('conversion_rate'))}, "
            f"average item price {_money(target_row.get('avg_item_price'), sym)}, "
            f"{_money(target_row.get('revenue_at_stake'), sym)} at stake. Dotted lines: "
            f"medians ({_pct(medians['median_conversion'])}, "
            f"{_money(medians['median_price'], sym)})."
            if target else "No recommendation yet."),
        "arpu": "Revenue per active user; cohort = the target category's non-converted "
                "viewers. Switch the grain with the buttons."
                + (f" Dashed line: promotion start {promo_start}." if promo_start else
                   " Set var promo_start to mark the promotion."),
        "conversion": f"Funnel conversion per {conv_grain} (segment all); the target "
                      f"category{f' ({target})' if target else ''} is drawn bold.",
        "experiment": " ".join(verdicts) + (
            f" Revenue counts for {_days(built.panel['experiment'].experiment_window_days)} "
            "after exposure." if got["experiments"] else ""),
        "cohort": (
            f"Target cohort: {target_size:,} users who viewed {target} and did not buy"
            + (f" before {built.panel['cohort'].promo_start}"
               if built.panel["cohort"].promo_start else "")
            + ". Send it to your messaging tool with `arpu cohort export --format csv --out "
              "cohort.csv` (a list) or `arpu cohort export --format ndjson` (Segment identify "
              "messages with a trait)." if target else
            "No target category: build the project first."),
    }
    header = {
        "range": f"{_ts(first)} → {_ts(last)}" if first else "no events",
        "last_event": _ts(last),
        "events": f"{int(events or 0):,} events",
        "analysis": (f"[{vars_.start_date or 'first event'}, {vars_.end_date or 'last event'}]"
                     if vars_.start_date or vars_.end_date else "whole data")
                    + f", conversion window {_days(vars_.conversion_window_days)}"
                    + (f", promotion from {vars_.promo_start}" if vars_.promo_start else "")
                    + (f", target {vars_.target_category}" if vars_.target_category else ""),
        "built": built_text,
        "expectations": expectations["text"],
        "expectations_ok": expectations["ok"],
        "notes": built.notes,
    }
    series_per_panel = {key: len(fig.data) for key, fig in figures.items()}
    payload = {
        "header": header,
        "panels": [{"id": key, "title": title, "note": notes[key],
                    "figure": json.loads(figures[key].to_json())} for key, title in PANELS],
        "data": {
            "category_funnel": got["funnel"],
            "category_opportunities": got["opps"],
            "arpu_timeseries": got["series"],
            "category_conversion_timeseries": conversion,
            "experiment_results": got["experiments"],
            "cohort_sizes": got["cohort_sizes"],
            "target_category": target,
            "promo_start": promo_start,
            "currency": currency,
            "expectations_failed": expectations["failed"],
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
    return (Path(__file__).with_name("dashboard_template.html")).read_text(encoding="utf-8")
