"""SQL for a query plan: one sqlglot tree in DuckDB's dialect (the models' dialect), written for
any target by sqlglot, plus what each target's file says sqlglot does not translate the way
arpu needs (`_for_target`).

Shape, as MetricFlow renders it: one CTE per group of measures that share a semantic model,
filters and time transform (each left-joins what its group-by items and filters need, then
aggregates); the CTEs' rows are combined per group-by key (UNION ALL, then MAX per column, so
null keys match), and the metrics are computed from the aggregates. Cumulative metrics, offsets
and `join_to_timespine` read arpu's own time spine: the days of the queried range, generated in
SQL from a digits table (no table to maintain, and every engine can run it)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp, parse_one

from runner.dialect import SOURCE_DIALECT
from runner.errors import UsageError
from runner.metrics.plan import (
    AnyLeaf,
    ConversionLeaf,
    ConversionValue,
    Derived,
    Leaf,
    Node,
    Offset,
    Planner,
    QueryPlan,
    Ratio,
    Value,
    parse_expr,
)
from runner.metrics.resolve import PLACEHOLDER, Element, Hop, parse_filter
from runner.metrics.spec import PERIOD_GRAINS, Measure, SemanticModel, grain_rank

if TYPE_CHECKING:
    from runner.engines.base import TargetSql

SPINE, BOUNDS, DIGITS = "arpu_spine", "arpu_bounds", "arpu_digits"
SPINE_DIGITS = 5  # up to 100,000 days (273 years) between the first and the last day
DOUBLE = exp.DataType.build("double")
TIMESTAMP = exp.DataType.build("timestamp")


def _id(name: str) -> exp.Identifier:
    return exp.to_identifier(name)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=_id(name), table=_id(table) if table else None)


def _trunc(grain: str, value: exp.Expression) -> exp.Expression:
    if grain in ("nanosecond", "microsecond"):  # timestamps carry microseconds at most
        return value
    return exp.TimestampTrunc(this=value, unit=exp.var(grain.upper()))


def _interval(count: int, grain: str) -> exp.Interval:
    return exp.Interval(this=exp.Literal.string(str(count)), unit=exp.var(grain.upper()))


def _timestamp(value: dt.datetime) -> exp.Expression:
    text = value.replace(tzinfo=None).isoformat(sep=" ")
    return exp.Cast(this=exp.Literal.string(text), to=TIMESTAMP.copy())


def _and(conditions: Sequence[exp.Expression | None]) -> exp.Expression | None:
    present = [c for c in conditions if c is not None]
    if not present:
        return None
    joined = exp.and_(*[exp.paren(c) if isinstance(c, exp.Or) else c for c in present])
    assert isinstance(joined, exp.Expression)
    return joined


@functools.lru_cache(maxsize=2048)
def _parsed(text: str) -> exp.Expression:
    tree = parse_one(text, read=SOURCE_DIALECT)
    assert isinstance(tree, exp.Expression)
    return tree


def qualified(text: str, alias: str) -> exp.Expression:
    """A semantic model's `expr` (SQL over its relation's columns) read from `alias`."""
    tree = _parsed(text).copy()
    for column in list(tree.find_all(exp.Column)):
        if not column.table:
            column.set("table", _id(alias))
    return tree


def aggregate(measure: Measure, value: exp.Expression) -> exp.Expression:
    agg = measure.agg
    if agg == "sum":
        return exp.Sum(this=value)
    if agg == "sum_boolean":
        return exp.Sum(this=exp.Case(ifs=[exp.If(this=value, true=exp.Literal.number(1))],
                                     default=exp.Literal.number(0)))
    if agg == "count":
        return exp.Count(this=value)
    if agg == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[value]))
    if agg == "average":
        return exp.Avg(this=value)
    if agg == "min":
        return exp.Min(this=value)
    if agg == "max":
        return exp.Max(this=value)
    fraction = 0.5 if agg == "median" else float(measure.percentile or 0.5)
    kind = exp.PercentileDisc if measure.use_discrete_percentile else exp.PercentileCont
    return exp.WithinGroup(this=kind(this=exp.Literal.number(fraction)),
                           expression=exp.Order(expressions=[exp.Ordered(this=value)]))


@dataclass
class _Scope:
    """The FROM of one aggregate: the measure's relation as `s`, a left join per entity path."""

    gen: SqlGenerator
    model: SemanticModel
    measure: Measure
    alias: str = "s"
    joins: dict[tuple[Hop, ...], str] = field(default_factory=dict)

    def alias_for(self, hops: tuple[Hop, ...]) -> str:
        if not hops:
            return self.alias
        if hops not in self.joins:
            self.alias_for(hops[:-1])
            self.joins[hops] = f"j{len(self.joins) + 1}"
        return self.joins[hops]

    @property
    def row_time(self) -> exp.Expression:
        dim = self.model.dimension(self.measure.agg_time_dimension or "")
        assert dim is not None
        return qualified(dim.expr, self.alias)

    def element(self, element: Element, time: Callable[[str], exp.Expression]) -> exp.Expression:
        if element.kind == "metric_time":
            assert element.grain is not None
            return time(element.grain)
        alias = self.alias_for(element.hops)
        model = self.gen.models[element.model]
        if element.kind in ("time", "dimension"):
            dim = model.dimension(element.element)
            assert dim is not None
            value = qualified(dim.expr, alias)
            return _trunc(element.grain, value) if element.kind == "time" and element.grain \
                else value
        entity = model.entity(element.element)
        assert entity is not None
        return qualified(entity.expr, alias)

    def condition(self, text: str, elements: list[Element],
                  time: Callable[[str], exp.Expression]) -> exp.Expression:
        """A where filter with its references replaced by this scope's columns."""
        tree = parse_filter(text).condition.copy()
        values = [self.element(e, time) for e in elements]
        if isinstance(tree, exp.Column) and tree.name.startswith(PLACEHOLDER):
            return values[int(tree.name[len(PLACEHOLDER):])]
        for column in list(tree.find_all(exp.Column)):
            if column.name.startswith(PLACEHOLDER) and not column.table:
                column.replace(values[int(column.name[len(PLACEHOLDER):])])
        return tree

    def from_(self, select: exp.Select, source: exp.Expression | None = None) -> exp.Select:
        """`select` reading the measure's relation as `s` (after `source` when given, joined
        to it with the condition already added by the caller) and left-joining every path."""
        table = self.gen.table(self.model.model, self.alias)
        select = select.from_(source) if source is not None else select.from_(table)
        for hops, alias in self.joins.items():
            hop = hops[-1]
            left_model, right_model = self.gen.models[hop.left], self.gen.models[hop.right]
            left_entity, right_entity = left_model.entity(hop.entity), right_model.entity(
                hop.entity)
            assert left_entity is not None and right_entity is not None
            on: list[exp.Expression] = [exp.EQ(
                this=qualified(left_entity.expr, self.alias_for(hops[:-1])),
                expression=qualified(right_entity.expr, alias))]
            validity = right_model.validity
            if right_entity.type == "natural" and validity is not None:
                start, end = (qualified(d.expr, alias) for d in validity)
                on.append(exp.LTE(this=start, expression=self.row_time))
                on.append(exp.paren(exp.or_(exp.GT(this=end, expression=self.row_time),
                                            exp.Is(this=end.copy(), expression=exp.Null()))))
            select = select.join(self.gen.table(right_model.model, alias), on=_and(on),
                                 join_type="left", copy=False)  # from_() copied it
        return select


class SqlGenerator:
    """One plan, one tree."""

    def __init__(self, planner: Planner, plan: QueryPlan, relation: Callable[[str], str]) -> None:
        self.planner = planner
        self.plan = plan
        self.models = planner.manifest.semantic_models
        self.relation = relation
        self.ctes: list[tuple[str, exp.Query]] = []
        self.columns: dict[AnyLeaf, tuple[str, ...]] = {}
        self.cte_of: dict[AnyLeaf, str] = {}
        self._tables: dict[str, str] = {}

    def table(self, model: str, alias: str) -> exp.Table:
        if model not in self._tables:
            self._tables[model] = self.relation(model)
        table = exp.to_table(self._tables[model], dialect=SOURCE_DIALECT)
        return table.as_(alias) if alias else table  # type: ignore[return-value]

    # -- the whole query -------------------------------------------------------------------
    def select(self) -> exp.Select:
        plan = self.plan
        if plan.needs_spine:
            self._spine_ctes()
        branches: list[tuple[str, tuple[str, ...]]] = []
        groups: dict[tuple[object, ...], list[Leaf]] = {}
        for leaf in plan.leaves:
            if isinstance(leaf, ConversionLeaf):
                branches.append(self._conversion(leaf))
            else:
                groups.setdefault(self._group_key(leaf), []).append(leaf)
        for leaves in groups.values():
            branches.append(self._aggregate(leaves))
        for leaf in plan.spine_leaves:
            branches.append(self._spine_periods(leaf))
        keys = plan.group_by
        if len(branches) == 1:
            combined = branches[0][0]
        else:
            self.ctes.append(("arpu_combined", self._combine(branches, keys)))
            combined = "arpu_combined"
        final = exp.select(*[_col(k) for k in keys], *[
            exp.alias_(self._value(plan.values[name]), name) for name in plan.metrics
        ]).from_(combined)
        order = plan.order_by or [(k, False) for k in keys]
        if order:
            final = final.order_by(*[exp.Ordered(this=_col(name), desc=desc, nulls_first=False)
                                     for name, desc in order], copy=False)
        if plan.limit is not None:
            final = final.limit(plan.limit, copy=False)
        for name, cte in self.ctes:  # this tree is new: no builder needs to copy it
            final = final.with_(name, as_=cte, copy=False)
        return final

    @staticmethod
    def _combine(branches: list[tuple[str, tuple[str, ...]]], keys: list[str]) -> exp.Select:
        """One row per group-by key over every aggregate, as MetricFlow combines them: FULL
        OUTER JOINs on the keys, then GROUP BY the coalesced keys and MAX of each column (rows
        whose keys are null do not join, and meet again in the GROUP BY)."""
        aliases = [f"c{i + 1}" for i in range(len(branches))]

        def key(name: str, upto: int) -> exp.Expression:
            columns = [_col(name, a) for a in aliases[:upto]]
            if len(columns) == 1:
                return columns[0]
            return exp.Coalesce(this=columns[0], expressions=columns[1:])

        select = exp.select(*[exp.alias_(key(k, len(aliases)), k) for k in keys], *[
            exp.alias_(exp.Max(this=_col(c, alias)), c)
            for alias, (_, provided) in zip(aliases, branches, strict=True) for c in provided
        ]).from_(exp.to_table(branches[0][0]).as_(aliases[0]))
        for i, (name, _) in enumerate(branches[1:], start=1):
            table = exp.to_table(name).as_(aliases[i])
            if keys:
                on = _and([exp.EQ(this=key(k, i), expression=_col(k, aliases[i]))
                           for k in keys])
                select = select.join(table, on=on, join_type="full outer", copy=False)
            else:  # one row each
                select = select.join(table, join_type="cross", copy=False)
        if keys:
            select = select.group_by(*[exp.Literal.number(i + 1) for i in range(len(keys))])
        return select

    # -- metric values -----------------------------------------------------------------------
    def _value(self, node: Node) -> exp.Expression:
        if isinstance(node, Value):
            column: exp.Expression = _col(self.columns[node.leaf][0])
            if node.fill is not None:
                column = exp.Coalesce(this=column, expressions=[exp.Literal.number(node.fill)])
            return column
        if isinstance(node, Ratio):
            return _divide(self._value(node.numerator), self._value(node.denominator))
        if isinstance(node, ConversionValue):
            opportunities, conversions = (_col(c) for c in self.columns[node.leaf])
            converted: exp.Expression = conversions
            if node.fill is not None:
                converted = exp.Coalesce(this=conversions,
                                         expressions=[exp.Literal.number(node.fill)])
            if node.calculation == "conversions":
                return converted
            return _divide(converted, opportunities)
        assert isinstance(node, Derived)
        tree = parse_expr(node.expr).copy()
        inputs = dict(node.inputs)
        if isinstance(tree, exp.Column) and not tree.table and tree.name in inputs:
            return exp.paren(self._value(inputs[tree.name]))
        for column in list(tree.find_all(exp.Column)):
            if not column.table and column.name in inputs:
                column.replace(exp.paren(self._value(inputs[column.name])))
        return tree

    # -- aggregates ----------------------------------------------------------------------
    def _group_key(self, leaf: Leaf) -> tuple[object, ...]:
        measure = self.planner.measure(leaf.measure)
        return (measure.semantic_model, measure.agg_time_dimension, leaf.filters, leaf.offset,
                leaf.cumulative, measure.non_additive)

    def _name(self, prefix: str) -> str:
        return f"arpu_{prefix}_{len(self.ctes) + 1}"

    def _aggregate(self, leaves: list[Leaf]) -> tuple[str, tuple[str, ...]]:
        """One CTE: the measures of `leaves` by the query's group-by items."""
        leaf = leaves[0]
        measure = self.planner.measure(leaf.measure)
        model = self.models[measure.semantic_model]
        dim = model.dimension(measure.agg_time_dimension or "")
        assert dim is not None and dim.grain is not None
        # the spine is days or coarser: a finer time dimension joins it by its day
        base_grain = dim.grain if dim.grain in PERIOD_GRAINS else "day"
        grains = self.plan.time_grains
        names = []
        for item in leaves:
            names.append(f"m{len(self.columns) + 1}_{item.measure}")
            self.columns[item] = (names[-1],)
        mode = "plain"
        if leaf.cumulative is not None and grains:
            mode = "cumulative"
        elif leaf.offset is not None:
            mode = "after" if _after_aggregation(leaf.offset, grains) else "before"
        if measure.non_additive is not None and mode != "plain":
            raise UsageError(f"measure '{measure.name}' has a non_additive_dimension: it cannot "
                             "be cumulative or offset", location="--metrics")
        scope = _Scope(self, model, measure)
        elements = self.plan.elements[leaf]
        filters = self.plan.filter_elements[leaf]

        def row_time(grain: str) -> exp.Expression:
            return _trunc(grain, scope.row_time)

        def spine_time(grain: str) -> exp.Expression:
            value = _col("period", "sp")
            return value if grain == base_grain else _trunc(grain, value)

        time = spine_time if mode in ("cumulative", "before") else row_time
        if mode == "after":  # aggregated at the finest queried grain, then shifted on the spine
            finest = grains[0]
            inner_elements = [e for e in elements if e.kind != "metric_time"]
            selects = [exp.alias_(row_time(finest), "arpu_period")] + [
                exp.alias_(scope.element(e, row_time), e.name) for e in inner_elements]
            kept = [scope.condition(text, refs, row_time) for text, refs in filters.items()
                    if not any(r.kind == "metric_time" for r in refs)]
            inner = exp.select(*selects, *[
                exp.alias_(aggregate(self.planner.measure(item.measure),
                                     qualified(self.planner.measure(item.measure).expr, "s")), n)
                for item, n in zip(leaves, names, strict=True)])
            inner = scope.from_(inner)
            condition = _and(kept)
            if condition is not None:
                inner = inner.where(condition)
            inner = inner.group_by(*[exp.Literal.number(i + 1) for i in range(len(selects))])
            shifted = self._shift_aggregated(leaf, inner, names, elements, filters, finest)
            for item in leaves:
                self.cte_of[item] = shifted[0]
            return shifted

        group_exprs = [scope.element(e, time) for e in elements]
        conditions: list[exp.Expression | None] = [
            scope.condition(text, refs, time) for text, refs in filters.items()]
        conditions.append(self._time_constraint(time))
        source: exp.Expression | None = None
        join_on: exp.Expression | None = None
        if mode in ("cumulative", "before"):
            source = self._spine(base_grain)
            join_on = self._spine_join(leaf, scope.row_time, base_grain)
            if mode == "before" and leaf.offset and leaf.offset.to_grain and grains and \
                    grains[0] != base_grain:  # offset_to_grain: the spine's period starts only
                conditions.append(exp.EQ(this=spine_time(grains[0]),
                                         expression=_col("period", "sp")))
        values = [aggregate(self.planner.measure(item.measure),
                            qualified(self.planner.measure(item.measure).expr, "s"))
                  for item in leaves]
        selects = [exp.alias_(g, e.name) for g, e in zip(group_exprs, elements, strict=True)]
        period_agg = mode == "cumulative" and grains[0] != base_grain
        if period_agg:
            selects.append(exp.alias_(_col("period", "sp"), "arpu_period"))
        select = exp.select(*selects, *[exp.alias_(v, n) for v, n in zip(values, names,
                                                                          strict=True)])
        select = scope.from_(select, source)
        if source is not None:
            # the measure's relation joins the spine: FROM spine INNER JOIN relation ON ...
            select = _insert_join(select, self.table(model.model, "s"), join_on)
        if measure.non_additive is not None:
            select = self._non_additive(select, scope, leaf, elements, filters)
        condition = _and(conditions)
        if condition is not None:
            select = select.where(condition)
        if selects:
            select = select.group_by(*[exp.Literal.number(i + 1) for i in range(len(selects))])
        if period_agg:
            assert leaf.cumulative is not None
            select = self._period_agg(select, elements, names, leaf.cumulative.period_agg)
        name = self._name("agg")
        self.ctes.append((name, select))
        for item in leaves:
            self.cte_of[item] = name
        return name, tuple(names)

    def _time_constraint(self, time: Callable[[str], exp.Expression]) -> exp.Expression | None:
        """--start-time / --end-time on metric_time, at the query's finest grain (periods that
        overlap the range count whole, as in MetricFlow)."""
        plan = self.plan
        grain = plan.time_grains[0] if plan.time_grains else "day"
        out: list[exp.Expression] = []
        if plan.start_time is not None:
            out.append(exp.GTE(this=time(grain),
                               expression=_trunc(grain, _timestamp(plan.start_time))))
        if plan.end_time is not None:
            out.append(exp.LTE(this=time(grain),
                               expression=_trunc(grain, _timestamp(plan.end_time))))
        return _and(out)

    def _spine_join(self, leaf: Leaf, row_time: exp.Expression, base: str) -> exp.Expression:
        period = _col("period", "sp")
        at = _trunc(base, row_time)
        if leaf.cumulative is not None:
            cumulative = leaf.cumulative
            conditions: list[exp.Expression] = [exp.LTE(this=at, expression=period)]
            if cumulative.window is not None:
                w = cumulative.window
                conditions.append(exp.GT(this=at.copy(), expression=exp.Sub(
                    this=period.copy(), expression=_interval(w.count, w.grain))))
            elif cumulative.grain_to_date is not None:
                conditions.append(exp.GTE(this=at.copy(), expression=_trunc(
                    cumulative.grain_to_date, period.copy())))
            result = _and(conditions)
            assert result is not None
            return result
        offset = leaf.offset
        assert offset is not None
        if offset.window is not None:
            shifted: exp.Expression = exp.Sub(this=period, expression=_interval(
                offset.window.count, offset.window.grain))
        else:
            assert offset.to_grain is not None
            shifted = _trunc(offset.to_grain, period)
        return exp.EQ(this=shifted, expression=at)

    def _shift_aggregated(self, leaf: Leaf, inner: exp.Select, names: list[str],
                          elements: list[Element], filters: dict[str, list[Element]],
                          finest: str) -> tuple[str, tuple[str, ...]]:
        """An offset joined after aggregation (MetricFlow does so when the query's finest grain
        is not finer than the offset's): the spine's periods at that grain, each reading the
        aggregate of its period shifted back."""
        offset = leaf.offset
        assert offset is not None
        inner_name = self._name("unshifted")
        self.ctes.append((inner_name, inner))
        period = _col("period", "sp")
        if offset.window is not None:
            shifted: exp.Expression = exp.Sub(this=period, expression=_interval(
                offset.window.count, offset.window.grain))
        else:
            assert offset.to_grain is not None
            shifted = _trunc(offset.to_grain, period)

        def time(grain: str) -> exp.Expression:
            return period.copy() if grain == finest else _trunc(grain, period.copy())

        selects = [exp.alias_(time(e.grain or finest) if e.kind == "metric_time"
                              else _col(e.name, "a"), e.name) for e in elements]
        select = exp.select(*selects, *[_col(n, "a") for n in names]).from_(
            self._spine(finest)).join(exp.to_table(inner_name).as_("a"), on=exp.EQ(
                this=shifted, expression=_col("arpu_period", "a")), join_type="inner")
        conditions: list[exp.Expression | None] = [self._time_constraint(time)]
        by_name = {e.name: e for e in elements}
        for text, refs in filters.items():
            if not any(r.kind == "metric_time" for r in refs):
                continue
            if any(r.kind != "metric_time" and r.name not in by_name for r in refs):
                raise UsageError(f"filter '{text}' mixes metric_time with items that are not "
                                 "in the group-by: not supported with an offset",
                                 location="--where")
            conditions.append(_outer_condition(text, refs, time))
        condition = _and(conditions)
        if condition is not None:
            select = select.where(condition)
        name = self._name("agg")
        self.ctes.append((name, select))
        return name, tuple(names)

    def _non_additive(self, select: exp.Select, scope: _Scope, leaf: Leaf,
                      elements: list[Element], filters: dict[str, list[Element]]) -> exp.Select:
        """Only the rows at the first (min) or last (max) value of the non-additive time
        dimension, per window_groupings entities and the queried metric_time periods."""
        measure = scope.measure
        nad = measure.non_additive
        assert nad is not None
        model = scope.model
        dim = model.dimension(nad.name)
        assert dim is not None and dim.grain is not None
        inner_scope = _Scope(self, model, measure, alias="s")

        def row_time(grain: str) -> exp.Expression:
            return _trunc(grain, inner_scope.row_time)

        parts: list[tuple[exp.Expression, exp.Expression]] = []  # (inner, outer)
        for entity_name in nad.window_groupings:
            entity = model.entity(entity_name)
            assert entity is not None
            parts.append((qualified(entity.expr, "s"), qualified(entity.expr, "s")))
        if nad.name == measure.agg_time_dimension:
            for grain in self.plan.time_grains:
                parts.append((row_time(grain), _trunc(grain, scope.row_time)))
        chosen = exp.Max if nad.window_choice == "max" else exp.Min
        at = _trunc(dim.grain, qualified(dim.expr, "s"))
        inner = exp.select(*[exp.alias_(p, f"p{i}") for i, (p, _) in enumerate(parts)],
                           exp.alias_(chosen(this=at), "arpu_chosen"))
        conditions = [inner_scope.condition(text, refs, row_time)
                      for text, refs in filters.items()]
        inner = inner_scope.from_(inner)
        condition = _and(conditions)
        if condition is not None:
            inner = inner.where(condition)
        if parts:
            inner = inner.group_by(*[exp.Literal.number(i + 1) for i in range(len(parts))])
        on: list[exp.Expression] = [exp.EQ(this=at.copy(),
                                           expression=_col("arpu_chosen", "nad"))]
        on += [exp.NullSafeEQ(this=outer, expression=_col(f"p{i}", "nad"))
               for i, (_, outer) in enumerate(parts)]
        return select.join(exp.Subquery(this=inner, alias=exp.TableAlias(this=_id("nad"))),
                           on=_and(on), join_type="inner")

    def _period_agg(self, select: exp.Select, elements: list[Element], names: list[str],
                    how: str) -> exp.Select:
        """A cumulative metric by week, month...: its value on the first (or last) day of the
        period that has one, or the average over those days (MetricFlow's period_agg)."""
        keys = [_col(e.name) for e in elements]
        inner = exp.Subquery(this=select, alias=exp.TableAlias(this=_id("daily")))
        if how == "average":
            out = exp.select(*keys, *[exp.alias_(exp.Avg(this=_col(n)), n) for n in names])
            out = out.from_(inner)
            return out.group_by(*[k.copy() for k in keys]) if keys else out
        function = exp.FirstValue if how == "first" else exp.LastValue
        spec = exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                              end="UNBOUNDED", end_side="FOLLOWING")
        windows = [exp.alias_(exp.Window(
            this=function(this=_col(n)), partition_by=[k.copy() for k in keys] or None,
            order=exp.Order(expressions=[exp.Ordered(this=_col("arpu_period"),
                                                     nulls_first=False)]),
            spec=spec.copy()), n) for n in names]
        return exp.select(*keys, *windows).distinct().from_(inner)

    def _spine_periods(self, leaf: Leaf) -> tuple[str, tuple[str, ...]]:
        """join_to_timespine: the range's periods that the measure's aggregate has no row for,
        as rows of their own (every other group-by item null)."""
        finest = self.plan.time_grains[0]
        name_of_leaf = self.cte_of[leaf]
        elements = self.plan.elements[leaf]
        time_columns = [e for e in elements if e.kind == "metric_time"]
        finest_name = next(e.name for e in time_columns if e.grain == finest)
        period = _col("period", "sp")

        def time(grain: str) -> exp.Expression:
            return period.copy() if grain == finest else _trunc(grain, period.copy())

        # the other items are null, typed as the aggregate's columns (h.* of an unmatched row)
        selects = [exp.alias_(time(e.grain or finest) if e.kind == "metric_time" else
                              _col(e.name, "h"), e.name) for e in elements]
        have = exp.select(*[_col(e.name) for e in elements]).distinct().from_(name_of_leaf)
        select = exp.select(*selects).from_(self._spine(finest)).join(
            exp.Subquery(this=have, alias=exp.TableAlias(this=_id("h"))),
            on=exp.EQ(this=period.copy(), expression=_col(finest_name, "h")), join_type="left")
        conditions = [exp.Is(this=_col(finest_name, "h"), expression=exp.Null()),
                      self._time_constraint(time)]
        select = select.where(_and([c for c in conditions if c is not None]))
        name = self._name("spine_periods")
        self.ctes.append((name, select))
        return name, ()

    # -- conversions -------------------------------------------------------------------------
    def _conversion(self, leaf: ConversionLeaf) -> tuple[str, tuple[str, ...]]:
        """MetricFlow's conversion metric: opportunities = the base measure by the group-by
        items; conversions = the conversion measure over conversion rows that follow a base row
        of the same entity (and constant properties) within the window, each attributed to the
        latest such base row (its time and group-by values)."""
        base = self.planner.measure(leaf.base)
        conv = self.planner.measure(leaf.conversion)
        base_model, conv_model = self.models[base.semantic_model], self.models[conv.semantic_model]
        grain = min((_dim_grain(base_model, base), _dim_grain(conv_model, conv)), key=grain_rank)
        n = len(self.columns) + 1
        opportunities, conversions = f"m{n}_{base.name}", f"m{n}_{conv.name}"
        self.columns[leaf] = (opportunities, conversions)
        elements = self.plan.elements[leaf]
        scope = _Scope(self, base_model, base)

        def row_time(g: str) -> exp.Expression:
            return _trunc(g, scope.row_time)

        keys = [exp.alias_(scope.element(e, row_time), e.name) for e in elements]
        base_entity = base_model.entity(leaf.entity)
        conv_entity = conv_model.entity(leaf.entity)
        if base_entity is None or conv_entity is None:
            raise UsageError(f"metric '{leaf.metric}': entity '{leaf.entity}' is not in both "
                             "semantic models", location="--metrics")
        constants = [(f"arpu_c{i}", _local(base_model, b), _local(conv_model, c))
                     for i, (b, c) in enumerate(leaf.constants)]
        base_select = exp.select(
            *keys, exp.alias_(qualified(base_entity.expr, "s"), "arpu_entity"),
            exp.alias_(row_time(grain), "arpu_time"),
            *[exp.alias_(qualified(b, "s"), name) for name, b, _ in constants],
            exp.alias_(qualified(base.expr, "s"), "arpu_value"))
        conditions: list[exp.Expression | None] = [
            scope.condition(text, refs, row_time)
            for text, refs in self.plan.filter_elements[leaf].items()]
        conditions.append(self._time_constraint(row_time))
        base_select = scope.from_(base_select)  # after the filters: they may join too
        condition = _and(conditions)
        if condition is not None:
            base_select = base_select.where(condition)
        base_name = self._name("base")
        self.ctes.append((base_name, base_select))
        conv_time = _trunc(grain, qualified(_dim_expr(conv_model, conv), "s"))
        entity_value = qualified(conv_entity.expr, "s")
        conv_select = exp.select(
            exp.alias_(entity_value, "arpu_entity"), exp.alias_(conv_time, "arpu_time"),
            *[exp.alias_(qualified(c, "s"), name) for name, _, c in constants],
            exp.alias_(qualified(conv.expr, "s"), "arpu_value"),
            exp.alias_(exp.Window(this=exp.RowNumber(), order=exp.Order(expressions=[
                exp.Ordered(this=entity_value.copy(), nulls_first=False),
                exp.Ordered(this=conv_time.copy(), nulls_first=False)])), "arpu_row")
        ).from_(self.table(conv_model.model, "s"))
        conv_name = self._name("conversion_rows")
        self.ctes.append((conv_name, conv_select))
        on: list[exp.Expression] = [
            exp.EQ(this=_col("arpu_entity", "b"), expression=_col("arpu_entity", "c")),
            *[exp.EQ(this=_col(name, "b"), expression=_col(name, "c")) for name, _, _ in
              constants],
            exp.LTE(this=_col("arpu_time", "b"), expression=_col("arpu_time", "c"))]
        if leaf.window is not None:
            start = exp.Sub(this=_col("arpu_time", "c"),
                            expression=_interval(leaf.window.count, leaf.window.grain))
            on.append((exp.GTE if leaf.closed else exp.GT)(this=_col("arpu_time", "b"),
                                                           expression=start))
        order = exp.Order(expressions=[
            exp.Ordered(this=_col("arpu_time", "b"), desc=True, nulls_first=False),
            *[exp.Ordered(this=_col(e.name, "b"), nulls_first=False) for e in elements]])
        spec = exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                              end="UNBOUNDED", end_side="FOLLOWING")
        matched = exp.select(
            _col("arpu_row", "c"), exp.alias_(_col("arpu_value", "c"), "arpu_value"),
            *[exp.alias_(exp.Window(this=exp.FirstValue(this=_col(e.name, "b")),
                                    partition_by=[_col("arpu_row", "c")], order=order.copy(),
                                    spec=spec.copy()), e.name) for e in elements]
        ).distinct().from_(exp.to_table(base_name).as_("b")).join(
            exp.to_table(conv_name).as_("c"), on=_and(on), join_type="inner")
        matched_name = self._name("conversions_matched")
        self.ctes.append((matched_name, matched))
        names = [e.name for e in elements]
        opp = exp.select(*[_col(k) for k in names], exp.alias_(
            aggregate(base, _col("arpu_value")), opportunities),
            exp.alias_(exp.Null(), conversions)).from_(base_name)
        hit = exp.select(*[_col(k) for k in names], exp.alias_(exp.Null(), opportunities),
                         exp.alias_(aggregate(conv, _col("arpu_value")), conversions)
                         ).from_(matched_name)
        if names:
            opp = opp.group_by(*[_col(k) for k in names])
            hit = hit.group_by(*[_col(k) for k in names])
        both = exp.select(*[_col(k) for k in names], exp.alias_(
            exp.Max(this=_col(opportunities)), opportunities), exp.alias_(
            exp.Max(this=_col(conversions)), conversions)).from_(exp.Subquery(
                this=exp.union(opp, hit, distinct=False),
                alias=exp.TableAlias(this=_id("oc"))))
        if names:
            both = both.group_by(*[_col(k) for k in names])
        name = self._name("conversion")
        self.ctes.append((name, both))
        return name, (opportunities, conversions)

    # -- the time spine ------------------------------------------------------------------
    def _spine_ctes(self) -> None:
        """`arpu_spine`: one row per day from the first to the last day of the data the query
        reads (or --start-time / --end-time), from a digits table."""
        plan = self.plan
        finest = plan.time_grains[0] if plan.time_grains else "day"
        digits: exp.Query = exp.select(exp.alias_(exp.Literal.number(0), "n"))
        for i in range(1, 10):
            digits = exp.union(digits, exp.select(exp.alias_(exp.Literal.number(i), "n")),
                               distinct=False)
        self.ctes.append((DIGITS, digits))
        lo: exp.Expression | None = None
        hi: exp.Expression | None = None
        if plan.start_time is not None:
            lo = _trunc(finest, _timestamp(plan.start_time))
        if plan.end_time is not None:
            hi = _trunc("day", _timestamp(plan.end_time))
        if lo is None or hi is None:
            parts = []
            for leaf in plan.leaves:
                measure = self.planner.measure(leaf.base if isinstance(leaf, ConversionLeaf)
                                               else leaf.measure)
                model = self.models[measure.semantic_model]
                value = _trunc("day", qualified(_dim_expr(model, measure), "t"))
                parts.append(exp.select(exp.alias_(value, "d")).from_(
                    self.table(model.model, "t")))
            union: exp.Query = parts[0]
            for part in parts[1:]:
                union = exp.union(union, part, distinct=False)
            data = exp.Subquery(this=union, alias=exp.TableAlias(this=_id("days")))
            bounds = exp.select(
                exp.alias_(lo if lo is not None else exp.Min(this=_col("d")), "lo"),
                exp.alias_(hi if hi is not None else exp.Max(this=_col("d")), "hi")).from_(data)
        else:
            bounds = exp.select(exp.alias_(lo, "lo"), exp.alias_(hi, "hi"))
        self.ctes.append((BOUNDS, bounds))
        number: exp.Expression = _col("n", "d0")
        for i in range(1, SPINE_DIGITS):
            number = exp.Add(this=number, expression=exp.Mul(
                this=exp.Literal.number(10 ** i), expression=_col("n", f"d{i}")))
        day = exp.Cast(this=exp.DateAdd(this=_col("lo", "b"), expression=number.copy(),
                                        unit=exp.var("DAY")), to=TIMESTAMP.copy())
        spine = exp.select(exp.alias_(day, "day")).from_(exp.to_table(BOUNDS).as_("b"))
        for i in range(SPINE_DIGITS):
            spine = spine.join(exp.to_table(DIGITS).as_(f"d{i}"), join_type="cross", copy=False)
        spine = spine.where(exp.LTE(this=number, expression=exp.DateDiff(
            this=_col("hi", "b"), expression=_col("lo", "b"), unit=exp.var("DAY"))))
        self.ctes.append((SPINE, spine))

    def _spine(self, grain: str) -> exp.Subquery:
        """The spine's periods at `grain`, as `sp(period)`."""
        day = _col("day")
        select = exp.select(exp.alias_(day if grain == "day" else _trunc(grain, day), "period"))
        select = select.from_(SPINE)
        if grain != "day":
            select = select.distinct()
        return exp.Subquery(this=select, alias=exp.TableAlias(this=_id("sp")))


def _after_aggregation(offset: Offset, grains: list[str]) -> bool:
    """MetricFlow joins an offset after aggregating when the finest queried grain is not finer
    than the offset's grain (except weeks with offset_to_grain): the period shifts whole."""
    if not grains:
        return False
    finest = grains[0]
    grain = offset.window.grain if offset.window is not None else offset.to_grain
    assert grain is not None
    if finest == "week" and offset.to_grain is not None:
        return False
    return grain_rank(finest) <= grain_rank(grain)


def _divide(numerator: exp.Expression, denominator: exp.Expression) -> exp.Expression:
    return exp.Div(this=exp.Cast(this=numerator, to=DOUBLE.copy()),
                   expression=exp.Nullif(this=exp.Cast(this=denominator, to=DOUBLE.copy()),
                                         expression=exp.Literal.number(0)))


def _dim_expr(model: SemanticModel, measure: Measure) -> str:
    dim = model.dimension(measure.agg_time_dimension or "")
    assert dim is not None
    return dim.expr


def _dim_grain(model: SemanticModel, measure: Measure) -> str:
    dim = model.dimension(measure.agg_time_dimension or "")
    assert dim is not None and dim.grain is not None
    return dim.grain


def _local(model: SemanticModel, name: str) -> str:
    """A constant property: a dimension or entity of the model, by its name."""
    dim = model.dimension(name)
    if dim is not None:
        return dim.expr
    entity = model.entity(name)
    if entity is None:
        raise UsageError(f"'{name}' is neither a dimension nor an entity of semantic model "
                         f"'{model.name}'", location="--metrics")
    return entity.expr


def _outer_condition(text: str, refs: list[Element],
                     time: Callable[[str], exp.Expression]) -> exp.Expression:
    tree = parse_filter(text).condition.copy()
    values = [time(r.grain or "day") if r.kind == "metric_time" else _col(r.name) for r in refs]
    if isinstance(tree, exp.Column) and tree.name.startswith(PLACEHOLDER):
        return values[int(tree.name[len(PLACEHOLDER):])]
    for column in list(tree.find_all(exp.Column)):
        if column.name.startswith(PLACEHOLDER) and not column.table:
            column.replace(values[int(column.name[len(PLACEHOLDER):])])
    return tree


def _insert_join(select: exp.Select, table: exp.Expression, on: exp.Expression | None
                 ) -> exp.Select:
    """Put `INNER JOIN table ON on` first among the select's joins (the relation every other
    join reads from must come before them)."""
    joins = select.args.get("joins") or []
    first = exp.Join(this=table, kind="INNER", on=on)
    select.set("joins", [first, *joins])
    return select


# -- targets ------------------------------------------------------------------------------
def _for_target(tree: exp.Expression, target: TargetSql) -> exp.Expression:
    """What sqlglot does not translate the way arpu needs, as the target's own file says
    (runner/engines/<target>.py): the unit of Monday's weeks, the type of timestamps, exact
    percentiles, the time spine."""
    for trunc in tree.find_all(exp.TimestampTrunc):
        unit = trunc.args.get("unit")
        if unit is not None and unit.name.upper() == "WEEK":
            trunc.set("unit", exp.var(target.week_unit))
    if target.timestamp_type is not None:
        timestamp = exp.DataType.build(target.timestamp_type, dialect=target.dialect)
        for cast in tree.find_all(exp.Cast):
            if cast.to.is_type(exp.DataType.Type.TIMESTAMP):
                cast.set("to", timestamp.copy())
    for node in list(tree.find_all(exp.WithinGroup)):
        computed = target.percentile(node)
        if computed is not node:
            node.replace(computed)
    ctes = {cte.alias: cte for cte in tree.find_all(exp.CTE)}
    if SPINE in ctes and (spine := target.day_spine(BOUNDS)) is not None:
        ctes[SPINE].set("this", spine)
        ctes[DIGITS].pop()  # only the portable spine reads it
    return tree


def _quote_names(tree: exp.Expression) -> exp.Expression:
    """Quote the names the query defines (group-by items, metrics, its own columns): an
    entity called `user` is PostgreSQL's current user when unquoted. Names from the semantic
    models' exprs stay as written."""
    names = {alias.alias for alias in tree.find_all(exp.Alias)}
    for identifier in tree.find_all(exp.Identifier):
        if identifier.this in names and not identifier.quoted:
            identifier.set("quoted", True)
    return tree


def render(tree: exp.Select, target: TargetSql, pretty: bool = True) -> str:
    """The query for `target` (runner.engines.target_sql)."""
    written = _for_target(_quote_names(tree.copy()), target)
    return written.sql(dialect=target.dialect, pretty=pretty)
