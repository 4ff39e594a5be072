"""What the board reads: the published relations its panels draw, `board_summary` (the data's
span, its main currency and the cohort sizes), the last build's `run_results.json` and the vars
each relation was published with (`arpu_build_info`). No metric is computed here: the models
compute them, the board only reads relations and chooses what to show."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.artifacts import BUILD_INFO
from runner.errors import ArpuError

if TYPE_CHECKING:
    from runner.config import Vars
    from runner.context import Context

Row = dict[str, Any]

# the relation each panel draws (whose vars label it)
PANEL_MODELS = {"funnel": "category_funnel", "opportunities": "category_opportunities",
                "arpu": "arpu_timeseries", "conversion": "category_conversion_timeseries",
                "experiment": "experiment_results", "cohort": "cohort_non_converted"}
SUMMARY = "board_summary"


def jsonable(value: Any) -> Any:
    """A value read from the warehouse as a JSON value (timestamps in UTC, without a zone)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
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


def num(value: Any) -> float | None:
    """A number read from the warehouse as a float; None for null, NaN or infinity."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def safe_rows(ctx: Context, name: str, order_by: str | None = None) -> list[Row]:
    try:
        return ctx.rows(name, order_by)
    except Exception:  # not built (yet): the panel says so instead of failing the page
        return []


def run_results(ctx: Context) -> dict[str, Any]:
    path = ctx.target_dir / "run_results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def by_arm(experiments: list[Row]) -> list[Row]:
    """Experiment rows by experiment, its control first, then its variants by name."""
    return sorted(experiments, key=lambda r: (str(r["experiment"]), not r.get("is_control"),
                                              str(r["variant"])))


@dataclass
class BuildVars:
    """The vars behind the page: per panel, those its relation was built with (else the
    current ones, for a build that did not record them)."""

    panel: dict[str, Vars]
    main: Vars  # the vars most of the page's relations were built with
    recorded: dict[str, dict[str, Any]]  # per panel relation that recorded them, its vars
    published_at: dt.datetime | None = None  # when the newest of them was built


def build_vars(ctx: Context) -> BuildVars:
    from runner.config import Vars

    recorded: dict[str, dict[str, Any]] = {}
    stamps = []
    for row in safe_rows(ctx, BUILD_INFO):
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
    return BuildVars(panel, main, shown, max(stamps, default=None))


@dataclass
class BoardData:
    """Everything the page shows, as read from the target, and the choices made from it."""

    funnel: list[Row]
    opps: list[Row]
    series: list[Row]
    conversion: list[Row]  # every grain and segment
    experiments: list[Row]
    cohort_sizes: list[Row]  # category, users
    span: tuple[Any, Any, int]  # the first and last event time, the number of messages
    currency: str
    has_summary: bool  # board_summary is published (not by an arpu that predates it)
    results: dict[str, Any]  # the last build's run_results.json ({} when none)
    built: BuildVars

    @property
    def categories(self) -> list[str]:
        return sorted({str(r["category"]) for r in self.funnel}
                      | {str(r["category"]) for r in self.opps}
                      | {str(r["category"]) for r in self.cohort_sizes})

    @property
    def target_row(self) -> Row | None:
        """The cohort's category: var target_category's, else the recommended one."""
        targets = [r for r in self.opps if r.get("is_target")]
        if not targets:
            targets = [r for r in self.opps if r.get("rank") == 1]
        return targets[0] if targets else None

    @property
    def target(self) -> str | None:
        row = self.target_row
        return str(row["category"]) if row else None

    @property
    def target_size(self) -> int:
        return next((int(r["users"]) for r in self.cohort_sizes
                     if str(r["category"]) == self.target), 0)

    @property
    def default_grain(self) -> str:
        """Weeks when there are four of them, else days (else the grain there is)."""
        grains_present = {r["grain"] for r in self.series}
        periods = {r["period_start"] for r in self.series if r["grain"] == "week"}
        grain = "week" if len(periods) >= 4 else "day"
        if grain not in grains_present and grains_present:
            grain = sorted(grains_present)[0]
        return grain

    @property
    def conversion_shown(self) -> list[Row]:
        """The conversion panel's rows: segment all, at the default grain."""
        grain = self.default_grain
        return [r for r in self.conversion if r["segment"] == "all" and r["grain"] == grain]


def read_board(ctx: Context) -> BoardData:
    """Read what the page shows from the target's published relations."""
    # a warehouse that cannot be read is an error, not a page of empty panels: the reader
    # raises its own one-line error (no published file, no connection)
    reader = ctx.reader()
    if not reader.relation_exists("stg_events"):
        raise ArpuError(f"nothing is published on target '{ctx.target_name}' yet: "
                        "run `arpu build`")
    has_summary = reader.relation_exists(SUMMARY)
    summary = safe_rows(ctx, SUMMARY, "scope, category") if has_summary else []
    data = next((r for r in summary if r["scope"] == "data"), None)
    return BoardData(
        funnel=safe_rows(ctx, "category_funnel", "category"),
        opps=safe_rows(ctx, "category_opportunities", "category"),
        series=safe_rows(ctx, "arpu_timeseries", "grain, segment, period_start"),
        conversion=safe_rows(ctx, "category_conversion_timeseries",
                             "grain, category, period_start"),
        experiments=safe_rows(ctx, "experiment_results", "experiment, variant"),
        cohort_sizes=[{"category": r["category"], "users": r["cohort_users"]}
                      for r in summary if r["scope"] == "cohort"],
        span=((data["first_event_at"], data["last_event_at"], data["events"]) if data
              else (None, None, 0)),
        currency=(str(data["main_currency"]) if data and data["main_currency"] is not None
                  else "USD"),
        has_summary=has_summary,
        results=run_results(ctx),
        built=build_vars(ctx),
    )
