"""Read `metrics/**/*.yml` into a SemanticManifest: dbt's Semantic Layer YAML (top-level
`semantic_models:`, `metrics:`, `saved_queries:`), keys and types as dbt-semantic-interfaces'
JSON schema has them. A wrong key, type or value is one line naming the file and line (exit 2);
what the definitions refer to is checked afterwards by `runner/metrics/validate.py`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from runner.config import FAST_YAML
from runner.errors import ConfigError
from runner.metrics.spec import (
    AGGREGATIONS,
    ENTITY_TYPES,
    GRAINS,
    METRIC_TYPES,
    ConstantProperty,
    Conversion,
    Dimension,
    Entity,
    Export,
    Measure,
    MeasureInput,
    Metric,
    MetricInput,
    NonAdditive,
    SavedQuery,
    SemanticManifest,
    SemanticModel,
    Where,
    Window,
)

NAME = re.compile(r"\A[a-z][a-z0-9_]*[a-z0-9]\Z")  # dbt-semantic-interfaces' element names
REF = re.compile(r"\A\s*(?:\{\{\s*)?ref\(\s*(['\"])(?P<name>[^'\"]+)\1\s*\)(?:\s*\}\})?\s*\Z")
WINDOW = re.compile(r"\A\s*(?P<count>\d+)\s+(?P<grain>[a-zA-Z]+?)s?\s*\Z")
TOP_LEVEL = ("semantic_models", "metrics", "saved_queries", "version")


class _Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of each key."""

    line = 0
    lines: dict[Any, int]


class _Seq(list):  # type: ignore[type-arg]
    line = 0
    lines: list[int]


class _Loader(FAST_YAML):  # type: ignore[misc,valid-type]
    pass


def _mapping(loader: Any, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line, out.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(f"'{key}' is given twice",
                              location=f"{loader.arpu_file}:{key_node.start_mark.line + 1}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: Any, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line, out.lines = node.start_mark.line + 1, [c.start_mark.line + 1 for c in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _sequence)


class _Obj:
    """One YAML mapping being read: typed getters, and unknown keys refused by name."""

    def __init__(self, file: str, data: Any, what: str, line: int) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{what} must be a mapping, not {_kind(data)}",
                              location=f"{file}:{line}")
        self.file, self.data, self.what = file, data, what
        self.line = getattr(data, "line", line) or line
        self.used: set[str] = set()

    def at(self, key: str | None = None) -> Where:
        lines = getattr(self.data, "lines", {})
        return Where(self.file, lines.get(key, self.line) if key else self.line)

    def fail(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(message, location=str(self.at(key)))

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def text(self, key: str, required: bool = False, default: str | None = None,
             choices: tuple[str, ...] | None = None, scalar: bool = False) -> Any:
        """A string (`scalar`: also a number or boolean, as text: `expr: 1`)."""
        value = self.raw(key)
        if value is None:
            if required:
                raise self.fail(f"{self.what} needs '{key}'")
            return default
        if scalar and isinstance(value, (bool, int, float)):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str):
            raise self.fail(f"{key}: must be a string, not {_kind(value)}", key)
        if choices is not None:
            if value.lower() not in choices:
                raise self.fail(f"{key}: '{value}' is not one of {', '.join(choices)}", key)
            return value.lower()
        return value

    def name(self, key: str = "name") -> str:
        value: str = self.text(key, required=True)
        if not NAME.match(value) or "__" in value:
            raise self.fail(f"{key}: '{value}' is not a valid name (lowercase letters, digits "
                            "and single underscores, starting with a letter)", key)
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(f"{key}: must be true or false, not {_kind(value)}", key)
        return value

    def integer(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key}: must be a whole number, not {_kind(value)}", key)
        return value

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{key}: must be a number, not {_kind(value)}", key)
        return float(value)

    def texts(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings (`filter:`, `tags:`)."""
        value = self.raw(key)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.fail(f"{key}: must be a string or a list of strings", key)
        return tuple(items)

    def child(self, key: str, what: str, required: bool = False) -> _Obj | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise self.fail(f"{self.what} needs '{key}'")
            return None
        return _Obj(self.file, value, what, self.at(key).line)

    def children(self, key: str, what: str) -> Iterator[_Obj]:
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise self.fail(f"{key}: must be a list, not {_kind(value)}", key)
        lines = getattr(value, "lines", [self.at(key).line] * len(value))
        for item, line in zip(value, lines, strict=True):
            yield _Obj(self.file, item, what, line)

    def done(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(f"{self.what}: unknown key '{key}' (allowed: "
                                f"{', '.join(allowed)})", key)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", _Map: "a mapping", list: "a list", _Seq: "a list", str: "a string",
            bool: "a boolean", int: "a number", float: "a number"}.get(type(value),
                                                                       type(value).__name__)


def parse_window(text: str, obj: _Obj, key: str) -> Window:
    match = WINDOW.match(text)
    grain = match.group("grain").lower() if match else ""
    if not match or grain not in GRAINS:
        raise obj.fail(f"{key}: '{text}' is not a window like '7 days' or '1 month' "
                       f"(granularities: {', '.join(GRAINS)})", key)
    return Window(int(match.group("count")), grain)


def _grain(obj: _Obj, key: str) -> str | None:
    value: str | None = obj.text(key)
    if value is None:
        return None
    if value.lower() not in GRAINS:
        raise obj.fail(f"{key}: '{value}' is not a granularity ({', '.join(GRAINS)})", key)
    return value.lower()


# -- files ----------------------------------------------------------------------------------
def metric_files(metrics_dir: Path) -> list[Path]:
    if not metrics_dir.is_dir():
        return []
    return sorted(p for p in metrics_dir.rglob("*") if p.suffix in (".yml", ".yaml")
                  and p.is_file())


def load_manifest(project_dir: Path, metrics_dir: Path | None = None) -> SemanticManifest:
    """Every `.yml` under `metrics/`, read and typed (not yet checked against each other)."""
    folder = metrics_dir or project_dir / "metrics"
    manifest = SemanticManifest()
    for path in metric_files(folder):
        name = str(path.relative_to(project_dir)) if path.is_relative_to(project_dir) else \
            str(path)
        manifest.files.append(name)
        _read_file(path, name, manifest)
    return manifest


def _read_file(path: Path, name: str, manifest: SemanticManifest) -> None:
    text = path.read_text(encoding="utf-8")
    loader = _Loader(text)
    loader.arpu_file = name
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                          location=f"{name}:{mark.line + 1}" if mark else name) from None
    finally:
        loader.dispose()
    if data is None:
        return
    top = _Obj(name, data, "a metrics file", 1)
    if "semantic_model" in top.data or "metric" in top.data:
        raise top.fail("MetricFlow's one-object documents are not read: use dbt's lists "
                       "`semantic_models:`, `metrics:` and `saved_queries:`")
    top.done(TOP_LEVEL)
    for obj in top.children("semantic_models", "a semantic model"):
        model = _semantic_model(obj)
        if model.name in manifest.semantic_models:
            raise obj.fail(f"semantic model '{model.name}' is already defined at "
                           f"{manifest.semantic_models[model.name].where}", "name")
        manifest.semantic_models[model.name] = model
    for obj in top.children("metrics", "a metric"):
        metric = _metric(obj)
        if metric.name in manifest.metrics:
            raise obj.fail(f"metric '{metric.name}' is already defined at "
                           f"{manifest.metrics[metric.name].where}", "name")
        manifest.metrics[metric.name] = metric
    for obj in top.children("saved_queries", "a saved query"):
        query = _saved_query(obj)
        if query.name in manifest.saved_queries:
            raise obj.fail(f"saved query '{query.name}' is already defined at "
                           f"{manifest.saved_queries[query.name].where}", "name")
        manifest.saved_queries[query.name] = query


# -- semantic models ------------------------------------------------------------------------
SEMANTIC_MODEL_KEYS = ("name", "model", "description", "label", "defaults", "primary_entity",
                       "entities", "dimensions", "measures", "config", "meta")


def _semantic_model(obj: _Obj) -> SemanticModel:
    name = obj.name()
    obj.what = f"semantic model '{name}'"
    ref = obj.text("model", required=True)
    match = REF.match(ref)
    if not match:
        raise obj.fail(f"model: '{ref}' is not ref('<model>')", "model")
    model = SemanticModel(name=name, model=match.group("name"), where=obj.at("name"),
                          description=obj.text("description", default=""),
                          label=obj.text("label"), primary_entity=obj.text("primary_entity"))
    defaults = obj.child("defaults", f"{obj.what}: defaults")
    if defaults is not None:
        model.default_agg_time_dimension = defaults.text("agg_time_dimension")
        model.defaults_where = defaults.at("agg_time_dimension")
        defaults.done(("agg_time_dimension",))
    for item in obj.children("entities", f"an entity of {obj.what}"):
        entity_name = item.name()
        model.entities.append(Entity(
            name=entity_name, type=item.text("type", required=True, choices=ENTITY_TYPES),
            expr=item.text("expr", default=entity_name, scalar=True), where=item.at("name"),
            role=item.text("role")))
        item.text("label")
        item.raw("description")
        item.raw("config")
        item.done(("name", "type", "expr", "role", "entity", "label", "description", "config"))
    for item in obj.children("dimensions", f"a dimension of {obj.what}"):
        model.dimensions.append(_dimension(item))
    for item in obj.children("measures", f"a measure of {obj.what}"):
        model.measures.append(_measure(item, name))
    obj.raw("config")
    obj.raw("meta")
    obj.done(SEMANTIC_MODEL_KEYS)
    return model


def _dimension(obj: _Obj) -> Dimension:
    name = obj.name()
    kind = obj.text("type", required=True, choices=("categorical", "time"))
    dim = Dimension(name=name, type=kind, expr=obj.text("expr", default=name, scalar=True),
                    where=obj.at("name"), description=obj.text("description", default=""),
                    label=obj.text("label"))
    params = obj.child("type_params", f"dimension '{name}': type_params")
    if kind == "time":
        if params is None:
            raise obj.fail(f"time dimension '{name}' needs type_params.time_granularity", "name")
        dim.grain = _grain(params, "time_granularity")
        if dim.grain is None:
            raise params.fail(f"time dimension '{name}' needs type_params.time_granularity")
        validity = params.child("validity_params", f"dimension '{name}': validity_params")
        if validity is not None:
            dim.is_start, dim.is_end = validity.flag("is_start"), validity.flag("is_end")
            validity.done(("is_start", "is_end"))
        params.done(("time_granularity", "validity_params"))
    elif params is not None:
        raise obj.fail(f"categorical dimension '{name}' takes no type_params", "type_params")
    obj.flag("is_partition")
    obj.raw("config")
    obj.done(("name", "type", "expr", "type_params", "description", "label", "is_partition",
              "config"))
    return dim


def _measure(obj: _Obj, model: str) -> Measure:
    name = obj.name()
    measure = Measure(name=name, agg=obj.text("agg", required=True, choices=AGGREGATIONS),
                      expr=obj.text("expr", default=name, scalar=True), semantic_model=model,
                      where=obj.at("name"), agg_time_dimension=obj.text("agg_time_dimension"),
                      create_metric=obj.flag("create_metric"),
                      description=obj.text("description", default=""), label=obj.text("label"))
    params = obj.child("agg_params", f"measure '{name}': agg_params")
    if params is not None:
        measure.percentile = params.number("percentile")
        measure.use_discrete_percentile = params.flag("use_discrete_percentile")
        if params.flag("use_approximate_percentile"):
            raise params.fail("use_approximate_percentile is not supported: arpu computes "
                              "exact percentiles on every engine", "use_approximate_percentile")
        params.done(("percentile", "use_discrete_percentile", "use_approximate_percentile"))
        if measure.agg != "percentile":
            raise obj.fail(f"measure '{name}': agg_params are for agg: percentile", "agg_params")
    if measure.agg == "percentile":
        if measure.percentile is None:
            raise obj.fail(f"measure '{name}': agg: percentile needs agg_params.percentile",
                           "agg")
        if not 0 < measure.percentile < 1:
            raise obj.fail(f"measure '{name}': percentile must be between 0 and 1 (exclusive), "
                           f"not {measure.percentile:g}", "agg_params")
    nad = obj.child("non_additive_dimension", f"measure '{name}': non_additive_dimension")
    if nad is not None:
        groupings = nad.raw("window_groupings") or []
        if not isinstance(groupings, list) or not all(isinstance(g, str) for g in groupings):
            raise nad.fail("window_groupings: must be a list of entity names", "window_groupings")
        measure.non_additive = NonAdditive(
            name=nad.text("name", required=True),
            window_choice=nad.text("window_choice", default="min", choices=("min", "max")),
            window_groupings=tuple(groupings))
        nad.done(("name", "window_choice", "window_groupings"))
    obj.text("create_metric_display_name")
    obj.raw("config")
    obj.done(("name", "agg", "expr", "agg_params", "agg_time_dimension", "non_additive_dimension",
              "create_metric", "create_metric_display_name", "description", "label", "config"))
    return measure


# -- metrics --------------------------------------------------------------------------------
METRIC_KEYS = ("name", "type", "type_params", "filter", "description", "label", "config",
               "time_granularity", "meta")
TYPE_PARAM_KEYS = {
    "simple": ("measure", "join_to_timespine", "fill_nulls_with"),
    "ratio": ("numerator", "denominator"),
    "derived": ("expr", "metrics"),
    "cumulative": ("measure", "window", "grain_to_date", "cumulative_type_params",
                   "join_to_timespine", "fill_nulls_with"),
    "conversion": ("conversion_type_params",),
}


def _metric(obj: _Obj) -> Metric:
    name = obj.name()
    obj.what = f"metric '{name}'"
    kind = obj.text("type", required=True, choices=METRIC_TYPES)
    meta: dict[str, Any] = {}
    config = obj.child("config", f"metric '{name}': config")
    if config is not None:
        meta = dict(config.raw("meta") or {})
        config.raw("enabled")
        config.raw("group")
        config.done(("meta", "enabled", "group"))
    if isinstance(obj.raw("meta"), dict):
        meta.update(obj.raw("meta"))
    metric = Metric(name=name, type=kind, where=obj.at("name"),
                    description=obj.text("description", default=""), label=obj.text("label"),
                    filters=obj.texts("filter"), filter_where=obj.at("filter"),
                    time_granularity=_grain(obj, "time_granularity"), meta=meta)
    params = obj.child("type_params", f"metric '{name}': type_params", required=True)
    assert params is not None
    if kind == "simple":
        metric.measure = _measure_input(params, "measure", required=True)
        _metric_level_measure_options(params, metric)
    elif kind == "ratio":
        metric.numerator = _metric_input(params, "numerator", offsets=False)
        metric.denominator = _metric_input(params, "denominator", offsets=False)
    elif kind == "derived":
        metric.expr = params.text("expr", required=True, scalar=True)
        metric.inputs = tuple(_metric_input_obj(item, offsets=True)
                              for item in params.children("metrics", "an input metric"))
        if not metric.inputs:
            raise params.fail(f"derived metric '{name}' needs type_params.metrics")
    elif kind == "cumulative":
        _cumulative(params, metric)
    else:
        _conversion(params, metric)
    params.done(TYPE_PARAM_KEYS[kind])
    obj.done(METRIC_KEYS)
    return metric


def _metric_level_measure_options(params: _Obj, metric: Metric) -> None:
    """`type_params.join_to_timespine` / `fill_nulls_with` (older placement): onto the measure."""
    join, fill = params.flag("join_to_timespine"), params.integer("fill_nulls_with")
    if metric.measure is not None and (join or fill is not None):
        m = metric.measure
        metric.measure = MeasureInput(m.name, m.where, m.filters, m.alias,
                                      fill if fill is not None else m.fill_nulls_with,
                                      join or m.join_to_timespine)


def _cumulative(params: _Obj, metric: Metric) -> None:
    nested = params.child("cumulative_type_params", "cumulative_type_params")
    if params.has("measure"):
        metric.measure = _measure_input(params, "measure", required=True)
    holders = [p for p in (params, nested) if p is not None]
    for holder in holders:
        if holder.has("window"):
            metric.window = parse_window(holder.text("window"), holder, "window")
        if holder.has("grain_to_date"):
            metric.grain_to_date = _grain(holder, "grain_to_date")
    if nested is not None:
        metric.period_agg = nested.text("period_agg", default="first",
                                        choices=("first", "last", "average"))
        if nested.has("metric"):
            metric.input_metric = nested.text("metric")
        nested.done(("window", "grain_to_date", "period_agg", "metric"))
    _metric_level_measure_options(params, metric)
    if metric.measure is None and metric.input_metric is None:
        raise params.fail(f"cumulative metric '{metric.name}' needs type_params.measure (or "
                          "cumulative_type_params.metric)")
    if metric.measure is not None and metric.input_metric is not None:
        raise params.fail(f"cumulative metric '{metric.name}': give a measure or a metric, "
                          "not both")
    if metric.window is not None and metric.grain_to_date is not None:
        raise params.fail(f"cumulative metric '{metric.name}': window and grain_to_date "
                          "cannot both be set")


def _conversion(params: _Obj, metric: Metric) -> None:
    conv = params.child("conversion_type_params", "conversion_type_params", required=True)
    assert conv is not None
    for key in ("base_metric", "conversion_metric"):
        if conv.has(key):
            raise conv.fail(f"{key} is not supported: use base_measure and conversion_measure",
                            key)
    window = conv.text("window")
    constants = []
    for item in conv.children("constant_properties", "a constant property"):
        constants.append(ConstantProperty(item.text("base_property", required=True),
                                          item.text("conversion_property", required=True)))
        item.done(("base_property", "conversion_property"))
    metric.conversion = Conversion(
        base_measure=_measure_input(conv, "base_measure", required=True),
        conversion_measure=_measure_input(conv, "conversion_measure", required=True),
        entity=conv.text("entity", required=True),
        calculation=conv.text("calculation", default="conversion_rate",
                              choices=("conversion_rate", "conversions")),
        window=parse_window(window, conv, "window") if window is not None else None,
        constant_properties=tuple(constants))
    conv.done(("base_measure", "conversion_measure", "entity", "calculation", "window",
               "constant_properties", "base_metric", "conversion_metric"))


def _measure_input(params: _Obj, key: str, required: bool = False) -> MeasureInput:
    value = params.raw(key)
    if isinstance(value, str):
        return MeasureInput(value, params.at(key))
    obj = params.child(key, f"{key}", required=required)
    assert obj is not None
    out = MeasureInput(name=obj.text("name", required=True), where=obj.at("name"),
                       filters=obj.texts("filter"), alias=obj.text("alias"),
                       fill_nulls_with=obj.integer("fill_nulls_with"),
                       join_to_timespine=obj.flag("join_to_timespine"))
    obj.done(("name", "filter", "alias", "fill_nulls_with", "join_to_timespine"))
    return out


def _metric_input(params: _Obj, key: str, offsets: bool) -> MetricInput:
    value = params.raw(key)
    if value is None:
        raise params.fail(f"{params.what} needs '{key}'")
    if isinstance(value, str):
        return MetricInput(value, params.at(key))
    obj = params.child(key, key)
    assert obj is not None
    return _metric_input_obj(obj, offsets)


def _metric_input_obj(obj: _Obj, offsets: bool) -> MetricInput:
    window = obj.text("offset_window") if offsets else None
    to_grain = _grain(obj, "offset_to_grain") if offsets else None
    if window is not None and to_grain is not None:
        raise obj.fail("offset_window and offset_to_grain cannot both be set", "offset_window")
    out = MetricInput(name=obj.text("name", required=True), where=obj.at("name"),
                      filters=obj.texts("filter"), alias=obj.text("alias"),
                      offset_window=parse_window(window, obj, "offset_window")
                      if window is not None else None,
                      offset_to_grain=to_grain)
    if out.alias is not None and (not NAME.match(out.alias) or "__" in out.alias):
        raise obj.fail(f"alias: '{out.alias}' is not a valid name", "alias")
    obj.done(("name", "filter", "alias", "offset_window", "offset_to_grain")
             if offsets else ("name", "filter", "alias"))
    return out


# -- saved queries --------------------------------------------------------------------------
def _saved_query(obj: _Obj) -> SavedQuery:
    name = obj.name()
    obj.what = f"saved query '{name}'"
    params = obj.child("query_params", f"saved query '{name}': query_params", required=True)
    assert params is not None
    metrics = params.texts("metrics")
    if not metrics:
        raise params.fail(f"saved query '{name}' needs query_params.metrics")
    limit = params.integer("limit")
    if limit is not None and limit < 0:
        raise params.fail(f"limit: must be 0 or more, not {limit}", "limit")
    exports = []
    for item in obj.children("exports", "an export"):
        export_name = item.name()
        config = item.child("config", f"export '{export_name}': config", required=True)
        assert config is not None
        schema = config.text("schema")
        alias = config.text("alias")
        for key, value in (("schema", schema), ("alias", alias)):
            if value is not None and not re.match(r"\A[A-Za-z_][A-Za-z0-9_]*\Z", value):
                raise config.fail(f"{key}: '{value}' is not a plain identifier", key)
        exports.append(Export(export_name,
                              config.text("export_as", required=True, choices=("table", "view")),
                              item.at("name"), schema, alias))
        config.done(("export_as", "schema", "alias"))
        item.done(("name", "config"))
    query = SavedQuery(name=name, where=obj.at("name"), metrics=metrics,
                       group_by=params.texts("group_by"), filters=params.texts("where"),
                       order_by=params.texts("order_by"), limit=limit, exports=tuple(exports),
                       description=obj.text("description", default=""), label=obj.text("label"))
    params.done(("metrics", "group_by", "where", "order_by", "limit"))
    obj.texts("tags")
    obj.raw("config")
    obj.done(("name", "description", "label", "query_params", "exports", "tags", "config"))
    return query
