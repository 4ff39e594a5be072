"""`target/semantic_manifest.json`: the semantic models, metrics and saved queries in the shape
dbt writes for MetricFlow (dbt-semantic-interfaces' serialized SemanticManifest), so tools that
read dbt's artifact read arpu's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.metrics.plan import implicit_metrics
from runner.metrics.spec import (
    Dimension,
    Entity,
    Measure,
    MeasureInput,
    Metric,
    MetricInput,
    SavedQuery,
    SemanticManifest,
    SemanticModel,
    Where,
    Window,
)


def _metadata(where: Where) -> dict[str, Any]:
    return {"repo_file_path": where.file, "file_slice": {
        "filename": Path(where.file).name, "start_line_number": where.line,
        "end_line_number": where.line, "content": ""}}


def _filter(texts: tuple[str, ...]) -> dict[str, Any] | None:
    if not texts:
        return None
    return {"where_filters": [{"where_sql_template": t} for t in texts]}


def _window(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"count": window.count, "granularity": window.grain}


def _entity(entity: Entity) -> dict[str, Any]:
    return {"name": entity.name, "description": None, "type": entity.type, "role": entity.role,
            "expr": entity.expr, "metadata": None, "label": None, "config": None}


def _dimension(dim: Dimension) -> dict[str, Any]:
    params = None
    if dim.type == "time":
        validity = {"is_start": dim.is_start, "is_end": dim.is_end} \
            if dim.is_start or dim.is_end else None
        params = {"time_granularity": dim.grain, "validity_params": validity}
    return {"name": dim.name, "description": dim.description or None, "type": dim.type,
            "is_partition": False, "type_params": params, "expr": dim.expr, "metadata": None,
            "label": dim.label, "config": None}


def _measure(measure: Measure) -> dict[str, Any]:
    nad = measure.non_additive
    return {
        "name": measure.name, "agg": measure.agg, "description": measure.description or None,
        "create_metric": measure.create_metric, "expr": measure.expr,
        "agg_params": {"percentile": measure.percentile,
                       "use_discrete_percentile": measure.use_discrete_percentile,
                       "use_approximate_percentile": False}
        if measure.agg == "percentile" else None,
        "metadata": None,
        "non_additive_dimension": {"name": nad.name, "window_choice": nad.window_choice,
                                   "window_groupings": list(nad.window_groupings)}
        if nad is not None else None,
        "agg_time_dimension": measure.agg_time_dimension, "label": measure.label,
        "config": None}


def _semantic_model(model: SemanticModel, relation: str) -> dict[str, Any]:
    return {
        "name": model.name, "description": model.description or None,
        "node_relation": {"alias": model.model, "schema_name": "", "database": None,
                          "relation_name": relation},
        "defaults": {"agg_time_dimension": model.default_agg_time_dimension}
        if model.default_agg_time_dimension else None,
        "primary_entity": model.primary_entity,
        "entities": [_entity(e) for e in model.entities],
        "measures": [_measure(m) for m in model.measures],
        "dimensions": [_dimension(d) for d in model.dimensions],
        "metadata": _metadata(model.where), "label": model.label, "config": None}


def _measure_input(item: MeasureInput | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"name": item.name, "filter": _filter(item.filters), "alias": item.alias,
            "join_to_timespine": item.join_to_timespine, "fill_nulls_with": item.fill_nulls_with}


def _metric_input(item: MetricInput | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"name": item.name, "filter": _filter(item.filters), "alias": item.alias,
            "offset_window": _window(item.offset_window),
            "offset_to_grain": item.offset_to_grain}


def _metric(metric: Metric, manifest: SemanticManifest) -> dict[str, Any]:
    conv = metric.conversion
    params: dict[str, Any] = {
        "measure": _measure_input(metric.measure),
        "numerator": _metric_input(metric.numerator),
        "denominator": _metric_input(metric.denominator),
        "expr": metric.expr,
        "window": _window(metric.window),
        "grain_to_date": metric.grain_to_date,
        "metrics": [_metric_input(i) for i in metric.inputs] if metric.inputs else None,
        "conversion_type_params": {
            "base_measure": _measure_input(conv.base_measure),
            "conversion_measure": _measure_input(conv.conversion_measure),
            "entity": conv.entity, "calculation": conv.calculation,
            "window": _window(conv.window),
            "constant_properties": [{"base_property": c.base_property,
                                     "conversion_property": c.conversion_property}
                                    for c in conv.constant_properties] or None,
        } if conv is not None else None,
        "cumulative_type_params": {
            "window": _window(metric.window), "grain_to_date": metric.grain_to_date,
            "period_agg": metric.period_agg, "metric": metric.input_metric,
        } if metric.type == "cumulative" else None,
        "input_measures": [_measure_input(m) for m in _input_measures(metric, manifest)],
    }
    return {"name": metric.name, "description": metric.description or None,
            "type": metric.type, "type_params": params, "filter": _filter(metric.filters),
            "metadata": _metadata(metric.where), "label": metric.label,
            "config": {"meta": metric.meta} if metric.meta else None,
            "time_granularity": metric.time_granularity}


def _input_measures(metric: Metric, manifest: SemanticManifest, depth: int = 0
                    ) -> list[MeasureInput]:
    if depth > 20:
        return []
    if metric.measure is not None:
        return [metric.measure]
    if metric.conversion is not None:
        return [metric.conversion.base_measure, metric.conversion.conversion_measure]
    names = [i.name for i in (metric.numerator, metric.denominator) if i is not None] + [
        i.name for i in metric.inputs] + ([metric.input_metric] if metric.input_metric else [])
    metrics = {**implicit_metrics(manifest), **manifest.metrics}
    out: list[MeasureInput] = []
    for name in names:
        if name in metrics:
            out += [m for m in _input_measures(metrics[name], manifest, depth + 1)
                    if m not in out]
    return out


def _saved_query(query: SavedQuery) -> dict[str, Any]:
    return {
        "name": query.name, "description": query.description or None,
        "query_params": {"metrics": list(query.metrics), "group_by": list(query.group_by),
                         "where": _filter(query.filters), "order_by": list(query.order_by),
                         "limit": query.limit},
        "metadata": _metadata(query.where), "label": query.label,
        "exports": [{"name": e.name, "config": {"export_as": e.export_as, "schema_name":
                                                e.schema, "alias": e.alias}}
                    for e in query.exports]}


def write_semantic_manifest(target_dir: Path, manifest: SemanticManifest,
                            relation: Any) -> Path:
    """`relation(model)` names the relation a semantic model reads."""
    payload = {
        "semantic_models": [_semantic_model(m, relation(m.model))
                            for m in manifest.semantic_models.values()],
        "metrics": [_metric(m, manifest) for m in
                    {**implicit_metrics(manifest), **manifest.metrics}.values()],
        "project_configuration": {"time_spine_table_configurations": [], "metadata": None,
                                  "dsi_package_version": {}, "time_spines": []},
        "saved_queries": [_saved_query(q) for q in manifest.saved_queries.values()],
    }
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / "semantic_manifest.json"
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)
    return path
