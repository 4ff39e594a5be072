"""What the definitions refer to, checked when they load: unknown models, entities, dimensions,
measures and metrics, type mismatches (a categorical agg_time_dimension, a ratio over a measure,
TimeDimension() of a categorical dimension), joins that would repeat rows (fan-out), SQL that
does not parse. Each problem is one ConfigError naming the file and line (exit 2)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp
from sqlglot.errors import ParseError

from runner.errors import ArpuError, ConfigError
from runner.metrics.plan import (
    ConversionLeaf,
    Planner,
    QueryRequest,
    implicit_metrics,
    parse_expr,
)
from runner.metrics.resolve import ResolveError, parse_filter, parse_item
from runner.metrics.spec import (
    PERIOD_GRAINS,
    Dimension,
    Entity,
    Measure,
    Metric,
    SavedQuery,
    SemanticManifest,
    SemanticModel,
    Where,
)
from runner.metrics.sql import _parsed


def validate_manifest(manifest: SemanticManifest, models: Iterable[str]) -> Planner:
    """Check everything; return the planner the queries use."""
    known = set(models)
    seen_measures: dict[str, Where] = {}
    for model in manifest.semantic_models.values():
        _semantic_model(model, known, seen_measures)
    for name, metric in implicit_metrics(manifest).items():
        if name in manifest.metrics:
            raise ConfigError(f"measure '{name}' has create_metric: true but metric '{name}' is "
                              f"also defined at {manifest.metrics[name].where}",
                              location=str(metric.where))
    planner = Planner(manifest)
    for metric in manifest.metrics.values():
        _metric(metric, manifest, planner)
    for metric in planner.metrics.values():
        if metric.filters:  # its own filters first, to name their line
            with _at(metric.filter_where or metric.where):
                _own_filters(planner, metric)
        with _at(metric.where):
            planner.plan(QueryRequest([metric.name], ["metric_time"]))
    for query in manifest.saved_queries.values():
        seen: set[str] = set()
        for export in query.exports:
            if export.schema is not None:
                raise ConfigError(f"export '{export.name}': schema: arpu publishes every "
                                  "relation to the target's schema (remove schema)",
                                  location=str(export.where))
            if export.relation in known or export.relation.startswith(("arpu_", "raw_")):
                raise ConfigError(f"export '{export.name}' would write '{export.relation}', "
                                  "a relation arpu builds: give it another name or alias",
                                  location=str(export.where))
            if export.relation in seen:
                raise ConfigError(f"saved query '{query.name}': two exports write "
                                  f"'{export.relation}'", location=str(export.where))
            seen.add(export.relation)
        with _at(query.where):
            planner.plan(saved_request(query))
    return planner


def saved_request(query: SavedQuery) -> QueryRequest:
    """A saved query's query_params as a request."""
    try:
        group_by = [parse_item(item) for item in query.group_by]
        order_by = [parse_item(item) for item in query.order_by]
    except ResolveError as exc:
        raise ConfigError(f"saved query '{query.name}': {exc}", location=str(query.where)) \
            from None
    return QueryRequest(list(query.metrics), list(group_by), list(query.filters),
                        list(order_by), query.limit)


class _at:
    """Turn a planning error into a ConfigError at a definition's line."""

    def __init__(self, where: Where) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, (ArpuError, ResolveError)) and not isinstance(exc, ConfigError):
            message = exc.message if isinstance(exc, ArpuError) else str(exc)
            raise ConfigError(message, location=str(self.where)) from None


def _sql(text: str, what: str, where: Where) -> None:
    try:
        tree = _parsed(text)
    except ParseError as exc:
        raise ConfigError(f"{what}: '{text}' is not SQL: {str(exc).splitlines()[0]}",
                          location=str(where)) from None
    if tree is None or isinstance(tree, exp.Query):
        raise ConfigError(f"{what}: '{text}' is not an expression", location=str(where))


def _semantic_model(model: SemanticModel, known: set[str],
                    seen_measures: dict[str, Where]) -> None:
    at = str(model.where)
    if model.model not in known:
        raise ConfigError(f"semantic model '{model.name}': model '{model.model}' is not a model "
                          "of this project (see `arpu ls`)", location=at)
    names: dict[str, Where] = {}
    elements: list[Entity | Dimension | Measure] = [*model.entities, *model.dimensions,
                                                    *model.measures]
    for element in elements:
        if element.name in names:
            raise ConfigError(f"semantic model '{model.name}': '{element.name}' is defined "
                              f"twice (also at line {names[element.name].line})",
                              location=str(element.where))
        names[element.name] = element.where
    primaries = [e.name for e in model.entities if e.type == "primary"]
    if len(primaries) > 1:
        raise ConfigError(f"semantic model '{model.name}' has {len(primaries)} primary "
                          f"entities ({', '.join(primaries)}): it can have one", location=at)
    if primaries and model.primary_entity and model.primary_entity != primaries[0]:
        raise ConfigError(f"semantic model '{model.name}': primary_entity "
                          f"'{model.primary_entity}' but entity '{primaries[0]}' is of type "
                          "primary", location=at)
    if model.dimensions and not primaries and not model.primary_entity:
        raise ConfigError(f"semantic model '{model.name}' has dimensions, so it needs a primary "
                          "entity (an entity of type primary, or primary_entity: <name>)",
                          location=at)
    for entity in model.entities:
        _sql(entity.expr, f"entity '{entity.name}'", entity.where)
        if entity.type == "natural" and model.validity is None:
            raise ConfigError(f"natural entity '{entity.name}' needs validity dimensions "
                              "(type_params.validity_params is_start and is_end) in its "
                              "semantic model", location=str(entity.where))
    for dim in model.dimensions:
        _sql(dim.expr, f"dimension '{dim.name}'", dim.where)
        if (dim.is_start or dim.is_end) and dim.type != "time":
            raise ConfigError(f"dimension '{dim.name}': validity_params need a time dimension",
                              location=str(dim.where))
    default = model.default_agg_time_dimension
    if default is not None:
        _time_dimension(model, default, "defaults.agg_time_dimension",
                        model.defaults_where or model.where)
    for measure in model.measures:
        if measure.name in seen_measures:
            raise ConfigError(f"measure '{measure.name}' is also defined at "
                              f"{seen_measures[measure.name]} (measure names are unique across "
                              "semantic models)", location=str(measure.where))
        seen_measures[measure.name] = measure.where
        _sql(measure.expr, f"measure '{measure.name}'", measure.where)
        measure.agg_time_dimension = measure.agg_time_dimension or default
        if measure.agg_time_dimension is None:
            raise ConfigError(f"measure '{measure.name}' has no agg_time_dimension (set it, or "
                              f"defaults.agg_time_dimension of '{model.name}')",
                              location=str(measure.where))
        _time_dimension(model, measure.agg_time_dimension,
                        f"measure '{measure.name}': agg_time_dimension", measure.where)
        nad = measure.non_additive
        if nad is not None:
            _time_dimension(model, nad.name, f"measure '{measure.name}': "
                            "non_additive_dimension", measure.where)
            for grouping in nad.window_groupings:
                if model.entity(grouping) is None:
                    raise ConfigError(f"measure '{measure.name}': window_groupings: "
                                      f"'{grouping}' is not an entity of '{model.name}'",
                                      location=str(measure.where))


def _time_dimension(model: SemanticModel, name: str, what: str, where: Where) -> None:
    dim = model.dimension(name)
    if dim is None:
        have = ", ".join(d.name for d in model.dimensions if d.type == "time") or "none"
        raise ConfigError(f"{what}: '{name}' is not a dimension of '{model.name}' (its time "
                          f"dimensions: {have})", location=str(where))
    if dim.type != "time":
        raise ConfigError(f"{what}: '{name}' is a categorical dimension, not a time dimension",
                          location=str(where))


def _metric(metric: Metric, manifest: SemanticManifest, planner: Planner) -> None:
    at = str(metric.where)
    known = planner.metrics

    def measure(name: str, where: Where) -> None:
        if manifest.measure(name) is None:
            hint = " (it is a metric: use a ratio or derived metric)" if name in known else ""
            raise ConfigError(f"metric '{metric.name}': '{name}' is not a measure{hint}",
                              location=str(where))

    def input_metric(name: str, where: Where) -> None:
        if name not in known:
            hint = (" (it is a measure: define a simple metric over it, or set "
                    "create_metric: true)") if manifest.measure(name) else ""
            raise ConfigError(f"metric '{metric.name}': '{name}' is not a metric{hint}",
                              location=str(where))

    for text in metric.filters:
        _filter(text, metric.where)
    if metric.type in ("simple", "cumulative") and metric.measure is not None:
        measure(metric.measure.name, metric.measure.where)
        for text in metric.measure.filters:
            _filter(text, metric.measure.where)
    if metric.type == "cumulative":
        if metric.input_metric is not None:
            input_metric(metric.input_metric, metric.where)
        if metric.window is not None and metric.window.grain not in PERIOD_GRAINS:
            raise ConfigError(f"metric '{metric.name}': window {metric.window} is finer than "
                              "a day", location=at)
    if metric.type == "ratio":
        for item in (metric.numerator, metric.denominator):
            assert item is not None
            input_metric(item.name, item.where)
            for text in item.filters:
                _filter(text, item.where)
    if metric.type == "derived":
        outputs: dict[str, Where] = {}
        for item in metric.inputs:
            input_metric(item.name, item.where)
            if item.output in outputs:
                raise ConfigError(f"metric '{metric.name}': two inputs are called "
                                  f"'{item.output}' (give one an alias)", location=str(item.where))
            outputs[item.output] = item.where
            for text in item.filters:
                _filter(text, item.where)
        assert metric.expr is not None
        try:
            tree = parse_expr(metric.expr)
        except ResolveError as exc:
            raise ConfigError(f"metric '{metric.name}': {exc}", location=at) from None
        referenced = {c.name for c in tree.find_all(exp.Column) if not c.table}
        unknown = sorted(referenced - set(outputs))
        if unknown:
            raise ConfigError(f"metric '{metric.name}': expr uses {', '.join(unknown)}, which "
                              f"{'is' if len(unknown) == 1 else 'are'} not among its input "
                              f"metrics ({', '.join(outputs)})", location=at)
    if metric.type == "conversion":
        conv = metric.conversion
        assert conv is not None
        for given in (conv.base_measure, conv.conversion_measure):
            measure(given.name, given.where)
        base = manifest.measure(conv.base_measure.name)
        target = manifest.measure(conv.conversion_measure.name)
        assert base is not None and target is not None
        base_model, target_model = manifest.model_of(base), manifest.model_of(target)
        for model in (base_model, target_model):
            if model.entity(conv.entity) is None:
                raise ConfigError(f"metric '{metric.name}': entity '{conv.entity}' is not an "
                                  f"entity of semantic model '{model.name}'", location=at)
        for constant in conv.constant_properties:
            for name, model in ((constant.base_property, base_model),
                                (constant.conversion_property, target_model)):
                if model.dimension(name) is None and model.entity(name) is None:
                    raise ConfigError(f"metric '{metric.name}': constant property '{name}' is "
                                      f"neither a dimension nor an entity of '{model.name}'",
                                      location=at)
        for used in (base, target):
            if used.agg not in ("sum", "count", "count_distinct"):
                raise ConfigError(f"metric '{metric.name}': measure '{used.name}' aggregates "
                                  f"by {used.agg}; conversion measures are sum, count or "
                                  "count_distinct", location=at)
        if conv.window is not None and conv.window.grain in ("nanosecond",):
            raise ConfigError(f"metric '{metric.name}': window {conv.window} is too fine",
                              location=at)
    end = metric.meta.get("arpu_window_end")
    if end is not None and (end not in ("inclusive", "exclusive") or metric.type != "conversion"):
        raise ConfigError(f"metric '{metric.name}': meta arpu_window_end is 'inclusive' or "
                          "'exclusive', on conversion metrics", location=at)


def _own_filters(planner: Planner, metric: Metric) -> None:
    """A metric's `filter:` resolves for every measure it reads."""
    plan = planner.plan(QueryRequest([metric.name], ["metric_time"]))
    for leaf in plan.leaves:
        measure = planner.measure(leaf.base if isinstance(leaf, ConversionLeaf) else leaf.measure)
        for text in metric.filters:
            for ref in parse_filter(text).refs:
                try:
                    planner.resolver.element(ref, measure)
                except ResolveError as exc:
                    raise ConfigError(f"metric '{metric.name}': filter: {exc}",
                                      location=str(metric.filter_where or metric.where)) \
                        from None


def _filter(text: str, where: Where) -> None:
    try:
        parse_filter(text)
    except ResolveError as exc:
        raise ConfigError(str(exc), location=str(where)) from None
