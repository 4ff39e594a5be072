"""A plain-Python evaluator of the metrics layer's semantics (MetricFlow's, as arpu documents
them): rows of the relations in, rows of a query out. Written apart from runner/metrics/plan.py
and sql.py (it shares only the typed definitions the YAML loader gives), for the property tests
to compare with `arpu query`.

What it reads: dimension, entity and measure `expr`s that are plain column names (or "1");
filters of the form `{{ Dimension('x') }} <op> <literal>` with =, !=, <, <=, >, >=, in (...),
is null, is not null; derived exprs of + - * / with nullif() and coalesce()."""

from __future__ import annotations

import ast
import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.metrics.spec import GRAINS, Measure, Metric, SemanticManifest, SemanticModel, Window

Row = dict[str, Any]
Key = tuple[Any, ...]


class RefError(Exception):
    """A query the reference cannot answer (the product must refuse it too)."""


# -- time ------------------------------------------------------------------------------------
def trunc(grain: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is None or grain in ("nanosecond", "microsecond"):
        return value
    if grain == "millisecond":
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if grain == "second":
        return value.replace(microsecond=0)
    if grain == "minute":
        return value.replace(second=0, microsecond=0)
    if grain == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "week":  # ISO: Monday
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    if grain == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def minus(value: dt.datetime, window: Window) -> dt.datetime:
    """`value - interval 'n' grain`, months clamped to the month's last day (as SQL does)."""
    if window.grain in ("day", "week"):
        return value - dt.timedelta(days=window.count * (7 if window.grain == "week" else 1))
    if window.grain in ("hour", "minute", "second"):
        return value - dt.timedelta(**{f"{window.grain}s": window.count})
    months = window.count * {"month": 1, "quarter": 3, "year": 12}[window.grain]
    index = value.year * 12 + value.month - 1 - months
    year, month = divmod(index, 12)
    last = (dt.date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
            - dt.timedelta(days=1)).day
    return value.replace(year=year, month=month + 1, day=min(value.day, last))


# -- aggregation -----------------------------------------------------------------------------
def aggregate(measure: Measure, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    agg = measure.agg
    if agg == "count":
        return len(present)
    if agg == "count_distinct":
        return len(set(present))
    if agg == "sum_boolean":
        return sum(1 for v in values if v is True) if values else None
    if not present:
        return None
    if agg == "sum":
        return sum(present)
    if agg == "average":
        return sum(present) / len(present)
    if agg == "min":
        return min(present)
    if agg == "max":
        return max(present)
    p = 0.5 if agg == "median" else float(measure.percentile or 0.5)
    ordered = sorted(present)
    if measure.use_discrete_percentile:
        return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]
    position = p * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def sort_key(row: Key) -> tuple[Any, ...]:
    return tuple((v is None, v if v is not None else 0) for v in row)


# -- the query -------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupBy:
    name: str
    path: tuple[str, ...]  # entity path ((): metric_time or a local entity)
    element: str
    grain: str | None = None  # metric_time and time dimensions


FILTER = re.compile(r"\A\s*\{\{\s*(Dimension|TimeDimension|Entity)\((.*?)\)\s*\}\}\s*"
                    r"(=|!=|<>|>=|<=|>|<|in|is not null|is null)\s*(.*?)\s*\Z",
                    re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Condition:
    ref: GroupBy
    op: str
    value: Any


def parse_group_by(name: str) -> GroupBy:
    parts = name.split("__")
    grain = None
    if len(parts) > 1 and parts[-1] in GRAINS:
        grain, parts = parts[-1], parts[:-1]
    if parts == ["metric_time"]:
        return GroupBy(name, (), "metric_time", grain or "day")
    return GroupBy(name, tuple(parts[:-1]), parts[-1], grain)


def parse_condition(text: str) -> Condition:
    match = FILTER.match(text)
    if not match:
        raise RefError(f"the reference reads no filter like {text!r}")
    kind, args, op, rest = match.groups()
    values = ast.literal_eval(f"[{args}]")
    name = values[0] + (f"__{values[1]}" if kind == "TimeDimension" and len(values) > 1 else "")
    op = op.lower()
    value: Any = None
    if op == "in":
        value = ast.literal_eval("[" + rest.strip()[1:-1] + "]")
    elif not op.startswith("is"):
        text_value = rest.strip()
        if text_value.lower() in ("true", "false"):
            value = text_value.lower() == "true"
        else:
            value = ast.literal_eval(text_value)
    return Condition(parse_group_by(name), "!=" if op == "<>" else op, value)


def holds(condition: Condition, value: Any) -> bool:
    op, wanted = condition.op, condition.value
    if op == "is null":
        return value is None
    if op == "is not null":
        return value is not None
    if value is None:
        return False  # SQL: a comparison with null is not true
    if isinstance(value, dt.datetime) and isinstance(wanted, str):
        wanted = dt.datetime.fromisoformat(wanted)
    if op == "in":
        return value in wanted
    return bool({"=": value == wanted, "!=": value != wanted, ">": value > wanted,
                 ">=": value >= wanted, "<": value < wanted, "<=": value <= wanted}[op])


class Reference:
    def __init__(self, manifest: SemanticManifest, tables: dict[str, list[Row]]) -> None:
        self.manifest = manifest
        self.tables = tables
        self.models = manifest.semantic_models
        self.metrics: dict[str, Metric] = dict(manifest.metrics)

    # -- definitions -----------------------------------------------------------------------
    def measure(self, name: str) -> Measure:
        found = self.manifest.measure(name)
        assert found is not None
        return found

    def model(self, measure: Measure) -> SemanticModel:
        return self.models[measure.semantic_model]

    def rows(self, model: SemanticModel) -> list[Row]:
        return self.tables[model.model]

    def time_column(self, measure: Measure) -> tuple[str, str]:
        dim = self.model(measure).dimension(measure.agg_time_dimension or "")
        assert dim is not None and dim.grain is not None
        return dim.expr, dim.grain

    @staticmethod
    def primary(model: SemanticModel) -> str | None:
        return model.primary_entity or next(
            (e.name for e in model.entities if e.type == "primary"), None)

    def lookup(self, model: SemanticModel, row: Row, path: tuple[str, ...], element: str,
               grain: str | None) -> Any:
        """The value of `path__element` for a row of `model`: local, or by left joins."""
        if not path:
            entity = model.entity(element)
            if entity is None:
                raise RefError(f"{element} is not an entity of {model.name}")
            return row.get(entity.expr)
        first = path[0]
        if len(path) == 1 and self.primary(model) == first:
            dim = model.dimension(element)
            if dim is not None:
                value = row.get(dim.expr)
                return trunc(grain, value) if dim.type == "time" and grain else value
        entity = model.entity(first)
        if entity is None:
            raise RefError(f"{first} is not an entity of {model.name}")
        key = row.get(entity.expr)
        for other in self.models.values():
            target = other.entity(first)
            if other.name == model.name or target is None or target.type not in (
                    "primary", "unique"):
                continue
            rest = path[1:]
            if not rest and other.dimension(element) is None and other.entity(element) is None:
                continue
            matches = [r for r in self.rows(other) if key is not None
                       and r.get(target.expr) == key]
            if not rest:
                if not matches:
                    return None
                if other.dimension(element) is not None:
                    dim = other.dimension(element)
                    assert dim is not None
                    value = matches[0].get(dim.expr)
                    return trunc(grain, value) if dim.type == "time" and grain else value
                found = other.entity(element)
                assert found is not None
                return matches[0].get(found.expr)
            return self.lookup(other, matches[0], rest, element, grain) if matches else None
        raise RefError(f"cannot reach {'__'.join((*path, element))} from {model.name}")

    # -- metric values -----------------------------------------------------------------------
    def query(self, metrics: list[str], group_by: list[str], where: list[str] | None = None,
              start: dt.datetime | None = None, end: dt.datetime | None = None
              ) -> list[Row]:
        specs = [parse_group_by(g) for g in group_by]
        conditions = [parse_condition(w) for w in where or []]
        grains = sorted({s.grain for s in specs if s.element == "metric_time" and s.grain},
                        key=GRAINS.index)
        self.context = _Query(specs, grains, start, end, conditions)
        self.context.days = self._spine_days(metrics)
        values = {name: self.value(name, (), None) for name in metrics}
        keys: set[Key] = set()
        for value in values.values():
            keys |= value.keys()
        if not specs:
            keys = {()}
        out = []
        for key in sorted(keys, key=sort_key):
            row = dict(zip(group_by, key, strict=True))
            for name in metrics:
                row[name] = values[name].get(key)
            out.append(row)
        return out

    def value(self, name: str, filters: tuple[str, ...], offset: Offset | None) -> Values:
        metric = self.metrics.get(name)
        if metric is None:
            measure = self.measure(name)
            assert measure.create_metric
            return _values(self.leaf(measure, filters, offset, None))
        filters = (*filters, *metric.filters)
        if metric.type == "simple":
            assert metric.measure is not None
            given = metric.measure
            out = _values(self.leaf(self.measure(given.name), (*filters, *given.filters),
                                    offset, None, given.join_to_timespine))
            if given.fill_nulls_with is not None:
                out = _filled(out, given.fill_nulls_with)
            return out
        if metric.type == "cumulative":
            assert metric.measure is not None
            given = metric.measure
            out = _values(self.leaf(self.measure(given.name), (*filters, *given.filters), None,
                                    metric))
            if given.fill_nulls_with is not None:
                out = _filled(out, given.fill_nulls_with)
            return out
        if metric.type == "ratio":
            assert metric.numerator is not None and metric.denominator is not None
            num = self.value(metric.numerator.name, (*filters, *metric.numerator.filters),
                             offset)
            den = self.value(metric.denominator.name,
                             (*filters, *metric.denominator.filters), offset)
            return _computed([num, den], _divide)
        if metric.type == "derived":
            inputs = []
            for item in metric.inputs:
                shift = offset
                if item.offset_window is not None or item.offset_to_grain is not None:
                    shift = Offset(item.offset_window, item.offset_to_grain)
                inputs.append((item.output, self.value(item.name, (*filters, *item.filters),
                                                       shift)))
            assert metric.expr is not None
            names = [n for n, _ in inputs]
            tree = ast.parse(metric.expr.replace("nullif", "_nullif")
                             .replace("coalesce", "_coalesce"), mode="eval").body
            return _computed([v for _, v in inputs],
                             lambda *args: _evaluate(tree, dict(zip(names, args, strict=True))))
        return self.conversion(metric, filters)

    # -- the time spine ----------------------------------------------------------------------
    def _spine_days(self, metrics: list[str]) -> list[dt.datetime]:
        ctx = self.context
        finest = ctx.grains[0] if ctx.grains else "day"
        days = []
        for measure in self._measures(metrics):
            column, _ = self.time_column(measure)
            days += [trunc("day", r.get(column)) for r in self.rows(self.model(measure))
                     if r.get(column) is not None]
        low = trunc(finest, ctx.start) if ctx.start else (min(days) if days else None)
        high = trunc("day", ctx.end) if ctx.end else (max(days) if days else None)
        if low is None or high is None:
            return []
        out, day = [], low
        while day <= high:
            out.append(day)
            day += dt.timedelta(days=1)
        return out

    def _measures(self, metrics: list[str]) -> list[Measure]:
        out: list[Measure] = []
        for name in metrics:
            metric = self.metrics.get(name)
            if metric is None:
                out.append(self.measure(name))
                continue
            if metric.measure is not None:
                out.append(self.measure(metric.measure.name))
            if metric.conversion is not None:
                out.append(self.measure(metric.conversion.base_measure.name))
            inputs = [i.name for i in (metric.numerator, metric.denominator) if i is not None]
            out += self._measures([*inputs, *[i.name for i in metric.inputs]])
        return out

    def periods(self, grain: str) -> list[dt.datetime]:
        seen: list[dt.datetime] = []
        for day in self.context.days:
            period = trunc(grain, day)
            assert period is not None
            if not seen or seen[-1] != period:
                seen.append(period)
        return seen

    # -- one measure ---------------------------------------------------------------------
    def _keys(self, model: SemanticModel, row: Row, time: Any) -> Key:
        return tuple(trunc(s.grain or "day", time) if s.element == "metric_time" else
                     self.lookup(model, row, s.path, s.element, s.grain)
                     for s in self.context.specs)

    def _passes(self, model: SemanticModel, row: Row, time: Any, filters: tuple[str, ...],
                only_time: bool | None = None) -> bool:
        for text in (*filters, *[c for c in self.context.where_texts]):
            condition = parse_condition(text) if isinstance(text, str) else text
            is_time = condition.ref.element == "metric_time"
            if only_time is not None and is_time != only_time:
                continue
            if is_time:
                value = trunc(condition.ref.grain or "day", time)
            else:
                value = self.lookup(model, row, condition.ref.path, condition.ref.element,
                                    condition.ref.grain)
            if not holds(condition, value):
                return False
        return True

    def _in_range(self, time: Any) -> bool:
        ctx = self.context
        grain = ctx.grains[0] if ctx.grains else "day"
        period = trunc(grain, time)
        if ctx.start is not None and (period is None or period < trunc(grain, ctx.start)):
            return False
        return not (ctx.end is not None and (period is None or period > trunc(grain, ctx.end)))

    def leaf(self, measure: Measure, filters: tuple[str, ...], offset: Offset | None,
             cumulative: Metric | None, join_to_timespine: bool = False) -> dict[Key, Any]:
        ctx = self.context
        model = self.model(measure)
        column, dim_grain = self.time_column(measure)
        base = dim_grain if GRAINS.index(dim_grain) >= GRAINS.index("day") else "day"
        rows = self.rows(model)
        groups: dict[Key, list[Any]] = defaultdict(list)
        if offset is not None and not ctx.grains:
            raise RefError("an offset needs metric_time")
        if cumulative is not None and ctx.grains:
            daily: dict[tuple[Key, dt.datetime], list[Any]] = defaultdict(list)
            for period in self.periods(base):
                for row in rows:
                    at = trunc(base, row.get(column))
                    if at is None or at > period or not _in_window(at, period, cumulative):
                        continue
                    if self._passes(model, row, period, filters) and self._in_range(period):
                        daily[(self._keys(model, row, period), period)].append(
                            _value(measure, row))
            values = {k: aggregate(measure, v) for k, v in daily.items()}
            if ctx.grains[0] == base:
                return {k: v for (k, _), v in values.items()}
            by_key: dict[Key, list[tuple[dt.datetime, Any]]] = defaultdict(list)
            for (key, period), value in values.items():
                by_key[key].append((period, value))
            how = cumulative.period_agg
            out: dict[Key, Any] = {}
            for key, items in by_key.items():
                items.sort(key=lambda item: item[0])
                if how == "average":
                    present = [v for _, v in items if v is not None]
                    out[key] = sum(present) / len(present) if present else None
                else:
                    out[key] = items[0][1] if how == "first" else items[-1][1]
            return out
        if offset is not None and _after_aggregation(offset, ctx.grains):
            finest = ctx.grains[0]
            aggregated: dict[tuple[Any, Key], list[Any]] = defaultdict(list)
            for row in rows:
                if self._passes(model, row, None, filters, only_time=False):
                    key = self._keys(model, row, row.get(column))
                    others = tuple(k for k, s in zip(key, ctx.specs, strict=True)
                                   if s.element != "metric_time")
                    aggregated[(trunc(finest, row.get(column)), others)].append(
                        _value(measure, row))
            out = {}
            for period in self.periods(finest):
                shifted = minus(period, offset.window) if offset.window else trunc(
                    offset.to_grain or "day", period)
                if not self._in_range(period) or not self._passes(
                        model, {}, period, filters, only_time=True):
                    continue
                for (at, others), values in aggregated.items():
                    if at != shifted:
                        continue
                    rest = iter(others)
                    key = tuple(trunc(s.grain or "day", period) if s.element == "metric_time"
                                else next(rest) for s in ctx.specs)
                    out[key] = aggregate(measure, values)
            return out
        if offset is not None:  # joined to the spine's days before aggregating
            for period in self.periods(base):
                shifted = minus(period, offset.window) if offset.window else trunc(
                    offset.to_grain or "day", period)
                if offset.to_grain and ctx.grains[0] != base and \
                        trunc(ctx.grains[0], period) != period:
                    continue
                for row in rows:
                    if trunc(base, row.get(column)) != shifted:
                        continue
                    if self._passes(model, row, period, filters) and self._in_range(period):
                        groups[self._keys(model, row, period)].append(_value(measure, row))
        else:
            for row in rows:
                time = row.get(column)
                if self._passes(model, row, time, filters) and self._in_range(time):
                    groups[self._keys(model, row, time)].append(_value(measure, row))
        if not ctx.specs:
            return {(): aggregate(measure, groups.get((), []))}
        out = {k: aggregate(measure, v) for k, v in groups.items()}
        if join_to_timespine and ctx.grains:
            finest = ctx.grains[0]
            index = [i for i, s in enumerate(ctx.specs) if s.element == "metric_time"
                     and s.grain == finest][0]
            have = {k[index] for k in out}
            for period in self.periods(finest):
                if period in have or not self._in_range(period):
                    continue
                key = tuple(trunc(s.grain or "day", period) if s.element == "metric_time"
                            else None for s in ctx.specs)
                out.setdefault(key, None)
        return out

    def conversion(self, metric: Metric, filters: tuple[str, ...]) -> Values:
        conv = metric.conversion
        assert conv is not None
        base, target = self.measure(conv.base_measure.name), self.measure(
            conv.conversion_measure.name)
        base_model, target_model = self.model(base), self.model(target)
        base_column, base_grain = self.time_column(base)
        target_column, target_grain = self.time_column(target)
        grain = min(base_grain, target_grain, key=GRAINS.index)
        base_entity, target_entity = base_model.entity(conv.entity), target_model.entity(
            conv.entity)
        assert base_entity is not None and target_entity is not None
        filters = (*filters, *conv.base_measure.filters)
        closed = metric.meta.get("arpu_window_end") == "inclusive"

        def local(model: SemanticModel, row: Row, name: str) -> Any:
            dim = model.dimension(name)
            if dim is not None:
                return row.get(dim.expr)
            entity = model.entity(name)
            assert entity is not None
            return row.get(entity.expr)

        bases = []
        for row in self.rows(base_model):
            time = row.get(base_column)
            if self._passes(base_model, row, time, filters) and self._in_range(time):
                bases.append((self._keys(base_model, row, time), row.get(base_entity.expr),
                              trunc(grain, time),
                              tuple(local(base_model, row, c.base_property)
                                    for c in conv.constant_properties), _value(base, row)))
        opportunities: dict[Key, list[Any]] = defaultdict(list)
        for key, _, _, _, value in bases:
            opportunities[key].append(value)
        conversions: dict[Key, list[Any]] = defaultdict(list)
        for row in self.rows(target_model):
            entity, time = row.get(target_entity.expr), trunc(grain, row.get(target_column))
            constants = tuple(local(target_model, row, c.conversion_property)
                              for c in conv.constant_properties)
            if entity is None or time is None:
                continue
            matches = [b for b in bases if b[1] == entity and b[2] is not None and b[2] <= time
                       and all(x is not None and x == y for x, y in
                               zip(b[3], constants, strict=True))
                       and (conv.window is None or (
                           b[2] >= minus(time, conv.window) if closed
                           else b[2] > minus(time, conv.window)))]
            if not matches:
                continue
            latest = max(b[2] for b in matches)
            chosen = sorted((b[0] for b in matches if b[2] == latest), key=sort_key)[0]
            conversions[chosen].append(_value(target, row))
        specs = self.context.specs
        keys = {()} if not specs else set(opportunities) | set(conversions)
        fill = conv.conversion_measure.fill_nulls_with

        def at(key: Key) -> Any:
            opp = aggregate(base, opportunities.get(key, [])) \
                if key in opportunities or not specs else None
            hit = aggregate(target, conversions.get(key, [])) \
                if key in conversions or not specs else None
            if hit is None and fill is not None:
                hit = fill
            return hit if conv.calculation == "conversions" else _divide(hit, opp)

        return Values(keys, at)


@dataclass
class _Query:
    specs: list[GroupBy]
    grains: list[str]
    start: dt.datetime | None
    end: dt.datetime | None
    where_texts: list[Condition]
    days: list[dt.datetime] | None = None


@dataclass(frozen=True)
class Offset:
    window: Window | None
    to_grain: str | None


def _after_aggregation(offset: Offset, grains: list[str]) -> bool:
    finest = grains[0]
    grain = offset.window.grain if offset.window is not None else offset.to_grain
    assert grain is not None
    if finest == "week" and offset.to_grain is not None:
        return False
    return GRAINS.index(finest) <= GRAINS.index(grain)


def _in_window(at: dt.datetime, period: dt.datetime, metric: Metric) -> bool:
    if metric.window is not None:
        return at > minus(period, metric.window)
    if metric.grain_to_date is not None:
        start = trunc(metric.grain_to_date, period)
        assert start is not None
        return at >= start
    return True


def _value(measure: Measure, row: Row) -> Any:
    return 1 if measure.expr == "1" else row.get(measure.expr)


def _divide(a: Any, b: Any) -> Any:
    if a is None or b is None or float(b) == 0:
        return None
    return float(a) / float(b)


class Values:
    """A metric's value per group-by key: the keys it has rows for, and its value at any key
    of the query (at another metric's key too: null, or what fill_nulls_with makes of it)."""

    def __init__(self, keys: set[Key], at: Callable[[Key], Any]) -> None:
        self._keys, self._at = keys, at

    def keys(self) -> set[Key]:
        return self._keys

    def get(self, key: Key) -> Any:
        return self._at(key)


def _values(found: dict[Key, Any]) -> Values:
    return Values(set(found), found.get)


def _filled(values: Values, fill: int) -> Values:
    def at(key: Key) -> Any:
        value = values.get(key)
        return fill if value is None else value

    return Values(values.keys(), at)


def _computed(inputs: list[Values], function: Callable[..., Any]) -> Values:
    keys: set[Key] = set()
    for item in inputs:
        keys |= item.keys()
    return Values(keys, lambda key: function(*[i.get(key) for i in inputs]))


def _evaluate(node: ast.expr, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _evaluate(node.operand, names)
        return None if value is None else -value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_evaluate(a, names) for a in node.args]
        if node.func.id == "_nullif":
            return None if args[0] == args[1] else args[0]
        if node.func.id == "_coalesce":
            return next((a for a in args if a is not None), None)
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            return None if right == 0 else left / right
    raise RefError(f"the reference cannot evaluate {ast.dump(node)}")
