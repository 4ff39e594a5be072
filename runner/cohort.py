"""`arpu cohort export`: the non-converted cohort of a category, for engagement tools."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from runner.errors import ArpuError, UsageError

if TYPE_CHECKING:
    from runner.context import Context

CSV_COLUMNS = ["user_key", "email", "phone", "first_viewed_at", "last_viewed_at", "views"]


@dataclass
class ExportSummary:
    category: str
    trait: str
    users: int


def cohort_trait(category: str) -> str:
    """The boolean trait named after the cohort, e.g. `non_converted_home_supplies`."""
    slug = re.sub(r"[^0-9a-z]+", "_", category.lower()).strip("_") or "category"
    return f"non_converted_{slug}"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """OWASP's CSV-injection rule: a cell a spreadsheet could read as a formula (leading `=`,
    `+`, `-`, `@`, tab or carriage return) gets a leading single quote, which spreadsheets show
    as text. Phone numbers such as `+1-555-...` are quoted too: Excel would compute them."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    return value


def export_cohort(ctx: Context, category: str | None, fmt: str, out: TextIO) -> ExportSummary:
    engine = ctx.reader()
    relation = ctx.relation  # models: where they are published
    for name in ("cohort_non_converted", "category_opportunities", "dim_users"):
        if not engine.relation_exists(name):
            raise ArpuError(f"'{name}' has not been built yet: run `arpu build`")
    if category is None:
        category = engine.scalar(
            f"select category from {relation('category_opportunities')} where is_target "
            "order by category limit 1")
        if category is None:
            raise UsageError("no recommended category (nothing viewed?): pass --category")
    known = engine.scalar(
        f"select count(*) from {relation('category_opportunities')} where category = ?",
        [category])
    if not known:
        raise UsageError(f"no category named {category!r} (see `arpu show category_funnel`)",
                         location="--category")
    columns, rows = engine.fetch(
        f"select c.user_key, c.email, c.phone, c.first_viewed_at, c.last_viewed_at, c.views, "
        f"u.is_identified from {relation('cohort_non_converted')} as c "
        f"left join {relation('dim_users')} as u on c.user_key = u.user_key "
        f"where c.category = ? order by c.user_key", [category])
    trait = cohort_trait(category)
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([csv_safe(_iso(v)) for v in row[:6]])
    else:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        for user_key, email, phone, first, last, views, identified in rows:
            traits: dict[str, Any] = {trait: True}
            if email is not None:
                traits["email"] = email
            if phone is not None:
                traits["phone"] = phone
            message = {
                "type": "identify",
                ("userId" if identified else "anonymousId"): user_key,
                "traits": traits,
                "context": {"arpu": {"cohort": trait, "category": category,
                                     "first_viewed_at": _iso(first), "last_viewed_at": _iso(last),
                                     "views": views}},
                "timestamp": now.replace("+00:00", "Z"),
            }
            out.write(json.dumps(message, ensure_ascii=False) + "\n")
    return ExportSummary(category, trait, len(rows))
