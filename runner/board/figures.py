"""The board's Plotly figures, one per panel, from the rows `data.py` read. A string from the
data reaches Plotly through `plot_text` (Plotly reads a few HTML-like tags in labels)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from runner.board.data import BoardData, Row, by_arm, jsonable, num
from runner.board.text import money, pct, pvalue

SEGMENT_COLOURS = {"all": "#3b4a6b", "cohort": "#d1495b", "non_cohort": "#00798c"}
CATEGORY_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
VIEWERS_COLOUR, PURCHASERS_COLOUR, RATE_COLOUR = "#a9bcd0", "#2b5c8a", "#e07a1f"
GRAINS = ("day", "week", "month")
SEGMENTS = ("all", "cohort", "non_cohort")


def panel_figures(board: BoardData, sym: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figure of each panel by panel id, and the medians the opportunity panel draws."""
    import plotly.graph_objects as go

    colours = _category_colours(board.categories)
    target = board.target
    funnel = _funnel_figure(go, board.funnel, sym)
    opportunities, medians = _opportunity_figure(go, board.opps, colours, sym)
    figures = {
        "funnel": funnel,
        "opportunities": opportunities,
        "arpu": _arpu_figure(go, board.series, board.built.panel["arpu"].promo_start, sym,
                             board.default_grain),
        "conversion": _conversion_figure(go, board.conversion_shown, colours, target,
                                         board.default_grain),
        "experiment": _experiment_figure(go, board.experiments, sym),
        "cohort": _cohort_figure(go, board.cohort_sizes, colours, target),
    }
    return figures, medians


# -- shared ----------------------------------------------------------------------------------
def plot_text(value: Any) -> str:
    """A data string as Plotly text: Plotly reads a few HTML-like tags and entities in labels,
    so escape them; Plotly decodes the entities back and draws the verbatim text."""
    return (str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


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


# -- the panels ------------------------------------------------------------------------------
def _funnel_figure(go: Any, funnel: list[Row], sym: str) -> Any:
    fig = go.Figure()
    rows = sorted(funnel, key=lambda r: (-(r["viewers"] or 0), str(r["category"])))
    if not rows:
        _empty(fig, "No product views in the analysis range")
        fig.update_layout(_base_layout())
        return fig
    cats = [plot_text(r["category"]) for r in rows]
    rates = [num(r["conversion_rate"]) for r in rows]
    fig.add_bar(name="Viewers", x=cats, y=[r["viewers"] for r in rows],
                marker_color=VIEWERS_COLOUR, hovertemplate="%{x}<br>%{y:,} viewers<extra></extra>")
    fig.add_bar(name="Purchasers", x=cats, y=[r["purchasers"] for r in rows],
                marker_color=PURCHASERS_COLOUR,
                hovertemplate="%{x}<br>%{y:,} purchasers<extra></extra>")
    fig.add_scatter(name="Conversion", x=cats, y=rates, yaxis="y2", mode="markers+text",
                    marker={"color": RATE_COLOUR, "size": 9, "symbol": "diamond"},
                    text=[pct(v, 0) for v in rates], textposition="top center",
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
    rows = [r for r in opps if num(r.get("avg_item_price")) is not None
            and num(r.get("conversion_rate")) is not None]
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
    hover = [f"{plot_text(r['category'])}<br>conversion {pct(r['conversion_rate'])}"
             f"<br>avg item price {money(r['avg_item_price'], sym)}"
             f"<br>revenue at stake {money(r.get('revenue_at_stake'), sym)}"
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
                x=[jsonable(r["period_start"]) for r in rows], y=[num(r["arpu"]) for r in rows],
                mode="lines+markers" if grain != "day" else "lines",
                line={"color": SEGMENT_COLOURS[segment], "width": 2.5 if segment == "all" else 2},
                marker={"size": 5}, visible=grain == default,
                customdata=[[r["active_users"], num(r["revenue"])] for r in rows],
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
        day = jsonable(promo_start)
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
        fig.add_scatter(name=label, x=[jsonable(r["period_start"]) for r in rows],
                        y=[num(r["conversion_rate"]) for r in rows], mode="lines",
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


def _experiment_figure(go: Any, results: list[Row], sym: str) -> Any:
    from plotly.subplots import make_subplots

    if not results:
        fig = go.Figure()
        _empty(fig, "No experiment exposures in the data")
        fig.update_layout(_base_layout())
        return fig
    several = len({r["experiment"] for r in results}) > 1
    rows = by_arm(results)

    def label(r: Row) -> str:
        name = plot_text(r["variant"]) + (" (control)" if r.get("is_control") else "")
        return f"{plot_text(r['experiment'])} · {name}" if several else name

    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=(
        "ARPU per variant", "conversion per variant", "ARPU difference vs control, 95% CI"))
    colours = ["#8c9bb0" if r.get("is_control") else "#2b5c8a" for r in rows]
    fig.add_bar(name="ARPU", x=[label(r) for r in rows], y=[num(r["arpu"]) for r in rows],
                marker_color=colours, text=[money(r["arpu"], sym) for r in rows],
                textposition="auto", showlegend=False,
                customdata=[[r["users"]] for r in rows],
                hovertemplate=f"%{{x}}<br>ARPU {sym}%{{y:,.2f}}<br>%{{customdata[0]:,}} users"
                              "<extra></extra>", row=1, col=1)
    fig.add_bar(name="Conversion", x=[label(r) for r in rows],
                y=[num(r["conversion_rate"]) for r in rows], marker_color=colours,
                text=[pct(r["conversion_rate"]) for r in rows], textposition="auto",
                showlegend=False, hovertemplate="%{x}<br>conversion %{y:.1%}<extra></extra>",
                row=1, col=2)
    treated = [r for r in rows if not r.get("is_control")]
    controls = {str(r["experiment"]): r for r in rows if r.get("is_control")}
    diffs, plus, minus = [], [], []
    for r in treated:
        control = controls.get(str(r["experiment"]))
        diff = num(r.get("arpu_diff"))
        if diff is None and control is not None and None not in (num(r["arpu"]),
                                                                 num(control["arpu"])):
            diff = float(r["arpu"]) - float(control["arpu"])
        low, high = num(r.get("arpu_ci_low")), num(r.get("arpu_ci_high"))
        diffs.append(diff)
        plus.append(None if diff is None or high is None else high - diff)
        minus.append(None if diff is None or low is None else diff - low)
    fig.add_scatter(name="ARPU difference", x=[label(r) for r in treated], y=diffs,
                    mode="markers", marker={"size": 11, "color": "#2b5c8a"},
                    error_y={"type": "data", "array": plus, "arrayminus": minus,
                             "color": "#2b5c8a", "thickness": 2, "width": 8},
                    showlegend=False,
                    customdata=[[pct(r.get("arpu_uplift")), pvalue(r.get("arpu_p_value")),
                                 pvalue(r.get("conversion_p_value"))] for r in treated],
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
    return fig


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
