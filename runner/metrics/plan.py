"""A query's plan: which measures to aggregate (with which filters and time transforms), what
every group-by item and filter reference is for each of them, and how each metric's value is
computed from the aggregates. `runner/metrics/sql.py` turns one plan into SQL for any engine."""

from __future__ import annotations

import datetime as dt
import difflib
import functools
from dataclasses import dataclass

from sqlglot import exp, parse_one
from sqlglot.errors import ParseError

from runner.dialect import SOURCE_DIALECT
from runner.errors import UsageError
from runner.metrics.resolve import (
    METRIC_TIME,
    Element,
    Filter,
    ResolveError,
    Resolver,
    parse_filter,
    parse_item,
    parse_name,
)
from runner.metrics.spec import (
    PERIOD_GRAINS,
    Measure,
    MeasureInput,
    Metric,
    QueryRequest,
    Ref,
    SemanticManifest,
    Window,
    grain_rank,
)

__all__ = ["Planner", "QueryPlan", "QueryRequest"]


@dataclass(frozen=True)
class Offset:
    """A derived metric's input shifted in time: `offset_window` or `offset_to_grain`."""

    window: Window | None = None
    to_grain: str | None = None


@dataclass(frozen=True)
class Cumulative:
    window: Window | None = None
    grain_to_date: str | None = None
    period_agg: str = "first"


@dataclass(frozen=True)
class Leaf:
    """One measure aggregated for the query: a column of the combined result."""

    measure: str
    filters: tuple[str, ...] = ()
    offset: Offset | None = None
    cumulative: Cumulative | None = None


@dataclass(frozen=True)
class ConversionLeaf:
    """A conversion metric's opportunities (base measure) and conversions (conversion measure
    rows that follow a base row of the same entity within the window)."""

    metric: str
    base: str
    conversion: str
    entity: str
    window: Window | None
    closed: bool
    constants: tuple[tuple[str, str], ...]
    filters: tuple[str, ...] = ()


AnyLeaf = Leaf | ConversionLeaf


@dataclass(frozen=True)
class Value:
    """A measure's aggregate as a metric reads it (`fill_nulls_with` coalesces)."""

    leaf: Leaf
    fill: int | None = None
    spine: bool = False  # join_to_timespine


@dataclass(frozen=True)
class Ratio:
    numerator: Node
    denominator: Node


@dataclass(frozen=True)
class Derived:
    expr: str  # the metric's expr, in DuckDB's dialect
    inputs: tuple[tuple[str, Node], ...]  # input name or alias -> its value


@dataclass(frozen=True)
class ConversionValue:
    leaf: ConversionLeaf
    calculation: str
    fill: int | None = None


Node = Value | Ratio | Derived | ConversionValue


@dataclass
class QueryPlan:
    metrics: list[str]
    values: dict[str, Node]
    group_by: list[str]  # output column names, in the order asked
    leaves: list[AnyLeaf]
    # per leaf: the group-by items resolved from its measure (conversions: the base measure)
    elements: dict[AnyLeaf, list[Element]]
    # per leaf: every filter's references resolved from its measure
    filter_elements: dict[AnyLeaf, dict[str, list[Element]]]
    order_by: list[tuple[str, bool]]  # (column, descending)
    limit: int | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    time_grains: list[str]  # the metric_time grains grouped by, finest first
    spine_leaves: list[Leaf]  # join_to_timespine: every period of the range has a row

    @property
    def needs_spine(self) -> bool:
        return bool(self.time_grains) and (bool(self.spine_leaves) or any(
            isinstance(leaf, Leaf) and (leaf.offset is not None or leaf.cumulative is not None)
            for leaf in self.leaves))


def implicit_metrics(manifest: SemanticManifest) -> dict[str, Metric]:
    """The simple metrics of measures with `create_metric: true`."""
    out = {}
    for measure in manifest.measures.values():
        if measure.create_metric and measure.name not in manifest.metrics:
            out[measure.name] = Metric(name=measure.name, type="simple", where=measure.where,
                                       description=measure.description, label=measure.label,
                                       measure=MeasureInput(measure.name, measure.where))
    return out


class Planner:
    def __init__(self, manifest: SemanticManifest) -> None:
        self.manifest = manifest
        self.metrics = {**implicit_metrics(manifest), **manifest.metrics}
        self.measures = manifest.measures
        self.resolver = Resolver(manifest)

    # -- metrics -------------------------------------------------------------------------
    def metric(self, name: str) -> Metric:
        found = self.metrics.get(name)
        if found is None:
            close = difflib.get_close_matches(name, list(self.metrics), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (see `arpu ls --metrics`)"
            raise UsageError(f"unknown metric '{name}'{hint}", location="--metrics")
        return found

    def measure(self, name: str) -> Measure:
        return self.measures[name]

    def node(self, name: str, filters: tuple[str, ...] = (), offset: Offset | None = None,
             stack: tuple[str, ...] = ()) -> Node:
        """A metric's value: its measures with every filter on the way down."""
        metric = self.metric(name)
        if name in stack:
            raise UsageError(f"metric '{name}' depends on itself: {' -> '.join((*stack, name))}",
                             location=str(metric.where))
        stack = (*stack, name)
        filters = (*filters, *metric.filters)
        if metric.type == "simple":
            assert metric.measure is not None
            m = metric.measure
            return Value(Leaf(m.name, _filters(*filters, *m.filters), offset), m.fill_nulls_with,
                         m.join_to_timespine)
        if metric.type == "cumulative":
            if offset is not None:
                raise UsageError(f"metric '{name}': an offset of a cumulative metric is not "
                                 "supported", location=str(metric.where))
            given: MeasureInput | None = metric.measure
            if given is None:  # cumulative over a simple metric (cumulative_type_params.metric)
                inner = self.metric(metric.input_metric or "")
                if inner.type != "simple" or inner.measure is None:
                    raise UsageError(f"metric '{name}': cumulative over '{inner.name}', which is "
                                     "not a simple metric", location=str(metric.where))
                given = inner.measure
                filters = (*filters, *inner.filters)
            cumulative = Cumulative(metric.window, metric.grain_to_date, metric.period_agg)
            return Value(Leaf(given.name, _filters(*filters, *given.filters), None, cumulative),
                         given.fill_nulls_with, given.join_to_timespine)
        if metric.type == "ratio":
            assert metric.numerator is not None and metric.denominator is not None
            num, den = metric.numerator, metric.denominator
            return Ratio(self.node(num.name, (*filters, *num.filters), offset, stack),
                         self.node(den.name, (*filters, *den.filters), offset, stack))
        if metric.type == "derived":
            inputs = []
            for item in metric.inputs:
                shift = offset
                if item.offset_window is not None or item.offset_to_grain is not None:
                    if offset is not None:
                        raise UsageError(f"metric '{name}': an offset of an offset metric is "
                                         "not supported", location=str(item.where))
                    shift = Offset(item.offset_window, item.offset_to_grain)
                inputs.append((item.output, self.node(item.name, (*filters, *item.filters),
                                                      shift, stack)))
            assert metric.expr is not None
            return Derived(metric.expr, tuple(inputs))
        assert metric.conversion is not None
        if offset is not None:
            raise UsageError(f"metric '{name}': an offset of a conversion metric is not "
                             "supported", location=str(metric.where))
        conv = metric.conversion
        leaf = ConversionLeaf(
            name, conv.base_measure.name, conv.conversion_measure.name, conv.entity,
            conv.window, metric.closed_window,
            tuple((c.base_property, c.conversion_property) for c in conv.constant_properties),
            _filters(*filters, *conv.base_measure.filters))
        return ConversionValue(leaf, conv.calculation, conv.conversion_measure.fill_nulls_with)

    # -- the query -----------------------------------------------------------------------
    def plan(self, request: QueryRequest) -> QueryPlan:
        if not request.metrics:
            raise UsageError("name at least one metric", location="--metrics")
        names = list(dict.fromkeys(request.metrics))
        values = {name: self.node(name) for name in names}
        leaves: list[AnyLeaf] = []
        spine_leaves: list[Leaf] = []
        for value in values.values():
            for leaf, joined in _leaves(value):
                if leaf not in leaves:
                    leaves.append(leaf)
                if joined and isinstance(leaf, Leaf) and leaf not in spine_leaves:
                    spine_leaves.append(leaf)
        refs = [_as_ref(item, "--group-by") for item in request.group_by]
        default_grain = self._default_grain(names, leaves)
        refs = [Ref(r.parts, r.kind, r.grain or default_grain, r.descending)
                if r.parts == (METRIC_TIME,) else r for r in refs]
        for text in request.where:
            self._parse_filter(text, "--where")
        elements: dict[AnyLeaf, list[Element]] = {}
        filter_elements: dict[AnyLeaf, dict[str, list[Element]]] = {}
        for leaf in leaves:
            measure = self._leaf_measure(leaf)
            elements[leaf] = [self._resolve(ref, measure, leaf, "--group-by") for ref in refs]
            texts = (*leaf.filters, *request.where)
            filter_elements[leaf] = {
                text: [self._resolve(r, measure, leaf, "filter") for r in
                       self._parse_filter(text, "--where").refs] for text in texts}
        columns = [e.name for e in elements[leaves[0]]] if leaves else []
        if len(set(columns)) != len(columns):
            raise UsageError("a group-by item is given twice", location="--group-by")
        grains = sorted({e.grain for e in elements[leaves[0]] if e.kind == "metric_time"
                         and e.grain}, key=grain_rank)
        self._check_time(leaves, grains)
        order = [self._order(item, columns, names) for item in request.order_by]
        if request.limit is not None and request.limit < 0:
            raise UsageError(f"must be 0 or more, not {request.limit}", location="--limit")
        if request.start_time and request.end_time and request.start_time > request.end_time:
            raise UsageError("--start-time is after --end-time", location="--start-time")
        return QueryPlan(names, values, columns, leaves, elements, filter_elements, order,
                         request.limit, request.start_time, request.end_time, grains,
                         spine_leaves if grains else [])

    def _leaf_measure(self, leaf: AnyLeaf) -> Measure:
        return self.measure(leaf.base if isinstance(leaf, ConversionLeaf) else leaf.measure)

    def _default_grain(self, names: list[str], leaves: list[AnyLeaf]) -> str:
        """`metric_time` without a grain: the metrics' `time_granularity` when they agree, else
        the coarsest granularity of their time dimensions (queryable for every one)."""
        chosen = {self.metrics[n].time_granularity for n in names}
        if len(chosen) == 1 and None not in chosen:
            return str(chosen.pop())
        grains = []
        for leaf in leaves:
            measure = self._leaf_measure(leaf)
            dim = self.manifest.model_of(measure).dimension(measure.agg_time_dimension or "")
            if dim is not None and dim.grain:
                grains.append(dim.grain)
        return max(grains, key=grain_rank) if grains else "day"

    def _resolve(self, ref: Ref, measure: Measure, leaf: AnyLeaf, where: str) -> Element:
        try:
            return self.resolver.element(ref, measure)
        except ResolveError as exc:
            owner = (f"metric '{leaf.metric}'" if isinstance(leaf, ConversionLeaf)
                     else f"measure '{measure.name}'")
            raise UsageError(f"{exc} (for {owner})", location=where) from None

    @staticmethod
    def _parse_filter(text: str, where: str) -> Filter:
        try:
            return parse_filter(text)
        except ResolveError as exc:
            raise UsageError(str(exc), location=where) from None

    def _check_time(self, leaves: list[AnyLeaf], grains: list[str]) -> None:
        for leaf in leaves:
            if not isinstance(leaf, Leaf):
                continue
            measure = self.measure(leaf.measure)
            dim = self.manifest.model_of(measure).dimension(measure.agg_time_dimension or "")
            assert dim is not None and dim.grain is not None
            if leaf.offset is not None and not grains:
                raise UsageError(f"an offset of measure '{leaf.measure}' needs metric_time in "
                                 "the group-by (metric_time__day, __week, ...)",
                                 location="--group-by")
            if leaf.offset and leaf.offset.window and \
                    leaf.offset.window.grain not in PERIOD_GRAINS:
                raise UsageError(f"offset windows are days or coarser, not "
                                 f"{leaf.offset.window}", location="--metrics")
            if leaf.cumulative and leaf.cumulative.window and \
                    leaf.cumulative.window.grain not in PERIOD_GRAINS:
                raise UsageError(f"cumulative windows are days or coarser, not "
                                 f"{leaf.cumulative.window}", location="--metrics")

    @staticmethod
    def _order(item: str | Ref, columns: list[str], metrics: list[str]) -> tuple[str, bool]:
        if isinstance(item, Ref):
            name, descending = item.text, item.descending
        else:
            text = item.strip()
            descending = text.startswith("-")
            name = text.lstrip("-")
            if "(" in name:
                ref = _as_ref(name, "--order-by")
                name, descending = ref.text, descending or ref.descending
        if name == METRIC_TIME:
            name = next((c for c in columns if c.startswith(f"{METRIC_TIME}__")), name)
        if name not in columns and name not in metrics:
            raise UsageError(f"'{name}' is neither a metric nor a group-by item of this query "
                             f"(columns: {', '.join([*columns, *metrics])})",
                             location="--order-by")
        return name, descending


def _as_ref(item: str | Ref, where: str) -> Ref:
    if isinstance(item, Ref):
        return item
    try:
        return parse_item(item) if "(" in item else parse_name(item)
    except ResolveError as exc:
        raise UsageError(str(exc), location=where) from None


def _filters(*texts: str) -> tuple[str, ...]:
    return tuple(sorted(set(texts)))


def _leaves(node: Node) -> list[tuple[AnyLeaf, bool]]:
    """The aggregates a value reads, and whether each joins the time spine."""
    if isinstance(node, Value):
        return [(node.leaf, node.spine)]
    if isinstance(node, ConversionValue):
        return [(node.leaf, False)]
    if isinstance(node, Ratio):
        return _leaves(node.numerator) + _leaves(node.denominator)
    return [leaf for _, child in node.inputs for leaf in _leaves(child)]


@functools.lru_cache(maxsize=256)
def parse_expr(text: str) -> exp.Expression:
    """A derived metric's expr (DuckDB's dialect), parsed once per process."""
    try:
        tree = parse_one(text, read=SOURCE_DIALECT)
    except ParseError as exc:
        raise ResolveError(f"expr '{text}' is not SQL: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, exp.Expression) or isinstance(tree, exp.Query):
        raise ResolveError(f"expr '{text}' is not an expression")
    return tree
