"""The board's words: numbers as the page writes them, each panel's note, the experiment's
verdicts, and the header (the data, the build, its vars, its expectations, and what the page
must say about them)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from runner.board.data import PANEL_MODELS, SUMMARY, BoardData, BuildVars, Row, by_arm, num

if TYPE_CHECKING:
    from runner.config import Vars

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


# -- numbers ---------------------------------------------------------------------------------
def currency_symbol(currency: str) -> str:
    return CURRENCY_SYMBOLS.get(currency.upper(), f"{currency} ")


def pct(value: Any, digits: int = 1) -> str:
    number = num(value)
    return "n/a" if number is None else f"{number * 100:.{digits}f}%"


def money(value: Any, symbol: str) -> str:
    number = num(value)
    if number is None:
        return "n/a"
    sign = "-" if number < 0 else ""
    return f"{sign}{symbol}{abs(number):,.2f}"


def pvalue(value: Any) -> str:
    number = num(value)
    if number is None:
        return "n/a"
    return "< 0.001" if number < 0.001 else f"{number:.3f}"


def p_text(value: Any) -> str:
    text = pvalue(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def ts(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def var_text(value: Any) -> str:
    return "not set" if value is None else value if isinstance(value, str) else json.dumps(value)


# -- the build -------------------------------------------------------------------------------
def built_at(results: dict[str, Any]) -> str:
    stamp = results.get("metadata", {}).get("generated_at")
    try:
        return ts(dt.datetime.fromisoformat(stamp)) if stamp else "n/a"
    except ValueError:
        return str(stamp)


def stale_results(results: dict[str, Any], published_at: dt.datetime | None) -> list[str]:
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
    return [f"The last build ({ts(ran)}) failed or did not finish: this page shows the build "
            f"published {ts(published_at)}; the expectations line is the failed build's."]


def expectations(results: dict[str, Any]) -> dict[str, Any]:
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


def vars_notes(built: BuildVars, current: Vars, given: Iterable[str]) -> list[str]:
    """What the page must say about the vars of the relations it draws: some not recorded,
    different from one relation to another, or other than the `--vars` given."""
    from runner.config import Vars

    shown = built.recorded
    if not shown:
        return []
    notes = []
    if len(shown) < len(PANEL_MODELS):
        missing = [m for m in PANEL_MODELS.values() if m not in shown]
        notes.append(f"The vars of {', '.join(missing)} were not recorded (published "
                     "by an earlier arpu or build): their labels follow arpu.yml.")
    varying = [key for key in Vars.model_fields
               if len({json.dumps(v.get(key)) for v in shown.values()}) > 1]
    if varying:
        parts = []
        for key in varying:
            by_value: dict[str, list[str]] = {}
            for model, values in shown.items():
                by_value.setdefault(var_text(values.get(key)), []).append(model)
            parts.append(f"{key} is " + "; ".join(f"{value} for {', '.join(models)}"
                                                for value, models in by_value.items()))
        notes.append("The relations on this page were built with different vars (a "
                     "partial `arpu build --select`): " + ". ".join(parts)
                     + ". Run `arpu build` to rebuild them together.")
    values = current.model_dump(mode="json")
    differ = []
    for key in given:
        in_build = sorted({var_text(v.get(key)) for v in shown.values()})
        if key in values and in_build != [var_text(values[key])]:
            differ.append(f"{key} {var_text(values[key])} given, {' / '.join(in_build)} "
                          "in the build")
    if differ:
        notes.append(
            f"--vars differ from the published build ({ts(built.published_at)}) that this "
            "page draws: "
            + "; ".join(differ) + ". The numbers and labels are the build's; run `arpu build` "
            "with these --vars to see yours.")
    return notes


def header(board: BoardData, target_name: str, notes: list[str]) -> dict[str, Any]:
    results, built, vars_ = board.results, board.built, board.built.main
    if results and not stale_results(results, built.published_at):
        built_text = (f"{ts(built.published_at) if built.published_at else built_at(results)}"
                      f" ({results.get('elapsed_seconds', 0):.1f} s, target "
                      f"{results.get('metadata', {}).get('target', target_name)})")
    else:
        built_text = ts(built.published_at) if built.published_at else "not built"
    checked = expectations(results)
    first, last, events = board.span
    return {
        "range": f"{ts(first)} → {ts(last)}" if first else "no events",
        "last_event": ts(last),
        "events": f"{int(events or 0):,} events",
        "analysis": (f"[{vars_.start_date or 'first event'}, {vars_.end_date or 'last event'}]"
                     if vars_.start_date or vars_.end_date else "whole data")
                    + f", conversion window {days(vars_.conversion_window_days)}"
                    + (f", promotion from {vars_.promo_start}" if vars_.promo_start else "")
                    + (f", target {vars_.target_category}" if vars_.target_category else ""),
        "built": built_text,
        "expectations": checked["text"],
        "expectations_ok": checked["ok"],
        "notes": notes,
    }


def header_notes(board: BoardData, current: Vars, given: Iterable[str]) -> list[str]:
    notes = vars_notes(board.built, current, given)
    notes += stale_results(board.results, board.built.published_at)
    if not board.has_summary:
        notes.append(f"{SUMMARY} is not published (built by an earlier arpu): the data's span, "
                     "its currency and the cohort sizes are missing. Run `arpu build`.")
    return notes


# -- the panels ------------------------------------------------------------------------------
def verdicts(experiments: list[Row], sym: str) -> list[str]:
    """One sentence per variant against its experiment's control."""
    if not experiments:
        return ["No experiment has been run on these data."]
    rows = by_arm(experiments)
    controls = {str(r["experiment"]): r for r in rows if r.get("is_control")}
    return [_verdict(r, controls.get(str(r["experiment"])), sym)
            for r in rows if not r.get("is_control")]


def _verdict(r: Row, control: Row | None, sym: str) -> str:
    name = str(r["variant"])
    base = str(control["variant"]) if control else "control"
    low, high = num(r.get("arpu_ci_low")), num(r.get("arpu_ci_high"))
    uplift = num(r.get("arpu_uplift"))
    p_arpu, p_conv = num(r.get("arpu_p_value")), num(r.get("conversion_p_value"))
    head = (f"{r['experiment']}: {name} vs {base}: ARPU "
            f"{money(r['arpu'], sym)} vs {money(control['arpu'], sym) if control else 'n/a'}"
            f" ({'+' if (uplift or 0) >= 0 else ''}{pct(uplift)}, {p_text(p_arpu)}, "
            f"95% CI of the difference {money(low, sym)} to {money(high, sym)}); conversion "
            f"{pct(r['conversion_rate'])} vs "
            f"{pct(control['conversion_rate']) if control else 'n/a'} "
            f"({p_text(p_conv)}). ")
    if p_arpu is None:
        return head + "Not enough data for a verdict."
    if p_arpu < 0.05:
        better = (uplift or 0) > 0
        return head + (f"At 95% confidence, {name} {'raises' if better else 'lowers'} ARPU: "
                       f"{'ship it' if better else 'do not ship it'}.")
    return head + (f"At 95% confidence there is no detectable ARPU difference between {name} "
                   f"and {base}: keep collecting data or treat it as neutral.")


def panel_notes(board: BoardData, medians: dict[str, Any], sym: str) -> dict[str, str]:
    """The line under each panel's title, labelled with the vars its relation was built with."""
    panel = board.built.panel
    target, target_row = board.target, board.target_row or {}
    promo_start = panel["arpu"].promo_start
    lead = ("Target (var target_category)" if panel["opportunities"].target_category
            else "Recommended")
    return {
        "funnel": "Users who viewed a product of the category and bought one within "
                  f"{days(panel['funnel'].conversion_window_days)} (bars), and the "
                  "conversion (diamonds).",
        "opportunities": (
            f"{lead}: {target} — conversion {pct(target_row.get('conversion_rate'))}, "
            f"average item price {money(target_row.get('avg_item_price'), sym)}, "
            f"{money(target_row.get('revenue_at_stake'), sym)} at stake. Dotted lines: "
            f"medians ({pct(medians['median_conversion'])}, "
            f"{money(medians['median_price'], sym)})."
            if target else "No recommendation yet."),
        "arpu": "Revenue per active user; cohort = the target category's non-converted "
                "viewers. Switch the grain with the buttons."
                + (f" Dashed line: promotion start {promo_start}." if promo_start else
                   " Set var promo_start to mark the promotion."),
        "conversion": f"Funnel conversion per {board.default_grain} (segment all); the target "
                      f"category{f' ({target})' if target else ''} is drawn bold.",
        "experiment": " ".join(verdicts(board.experiments, sym)) + (
            f" Revenue counts for {days(panel['experiment'].experiment_window_days)} "
            "after exposure." if board.experiments else ""),
        "cohort": (
            f"Target cohort: {board.target_size:,} users who viewed {target} and did not buy"
            + (f" before {panel['cohort'].promo_start}" if panel["cohort"].promo_start else "")
            + ". Send it to your messaging tool with `arpu cohort export --format csv --out "
              "cohort.csv` (a list) or `arpu cohort export --format ndjson` (Segment identify "
              "messages with a trait)." if target else
            "No target category: build the project first."),
    }
