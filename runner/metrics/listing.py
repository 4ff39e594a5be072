"""`arpu ls --metrics` and `arpu ls --dimensions --metrics a,b`: what can be asked for, under
the names `arpu query` takes (MetricFlow's)."""

from __future__ import annotations

from dataclasses import dataclass

from runner.artifacts import Shown
from runner.metrics.plan import ConversionLeaf, Planner, QueryRequest
from runner.metrics.resolve import METRIC_TIME, Resolver
from runner.metrics.spec import GRAINS, Measure, SemanticModel, grain_rank


@dataclass(frozen=True)
class Item:
    name: str
    kind: str  # time | categorical | entity
    grains: tuple[str, ...] = ()
    description: str = ""


def list_metrics(planner: Planner) -> Shown:
    rows = []
    for name in sorted(planner.metrics):
        metric = planner.metrics[name]
        text = " ".join((metric.description or "").split())
        first = text.split(". ")[0].rstrip(".")  # the first sentence
        rows.append((name, metric.type, first))
    return Shown("metrics", ["metric", "type", "description"], rows, len(rows), ["metric"])


def list_dimensions(planner: Planner, metrics: list[str]) -> Shown:
    """The group-by items every one of `metrics` can be grouped by (and filtered on)."""
    plan = planner.plan(QueryRequest(metrics))
    common: dict[str, Item] | None = None
    for leaf in plan.leaves:
        measure = planner.measure(leaf.base if isinstance(leaf, ConversionLeaf) else leaf.measure)
        items = {i.name: i for i in reachable(planner.resolver, measure)}
        common = items if common is None else {k: v for k, v in common.items() if k in items}
    found = sorted((common or {}).values(), key=lambda i: (i.name != METRIC_TIME, i.name))
    rows = [(i.name, i.kind, ", ".join(i.grains), i.description) for i in found]
    return Shown(f"group-by items of {', '.join(plan.metrics)} (a time item takes __<grain>)",
                 ["name", "type", "granularities", "description"], rows, len(rows), ["name"])


def _grains(finest: str) -> tuple[str, ...]:
    return tuple(g for g in GRAINS if grain_rank(g) >= max(grain_rank(finest),
                                                            grain_rank("day")))


def reachable(resolver: Resolver, measure: Measure) -> list[Item]:
    """metric_time, the measure's entities, and the dimensions and entities of every model
    reachable along entities (MetricFlow's entity paths, up to 3 hops, no fan-out)."""
    model = resolver.manifest.model_of(measure)
    agg = model.dimension(measure.agg_time_dimension or "")
    assert agg is not None and agg.grain is not None
    items = [Item(METRIC_TIME, "time", _grains(agg.grain), f"{model.name}.{agg.name}")]
    items += [Item(e.name, "entity", (), f"{model.name}.{e.name}") for e in model.entities]
    primary = resolver.primary_entity(model)
    if primary is not None:
        items += _elements(model, (primary,), include_entities=False)
    _walk(resolver, model, (), {model.name}, items)
    seen: dict[str, Item] = {}
    for item in items:
        seen.setdefault(item.name, item)
    return list(seen.values())


def _elements(model: SemanticModel, path: tuple[str, ...], include_entities: bool = True
              ) -> list[Item]:
    prefix = "__".join(path)
    out = []
    for dim in model.dimensions:
        text = " ".join(dim.description.split()) or f"{model.name}.{dim.name}"
        if dim.type == "time":
            assert dim.grain is not None
            out.append(Item(f"{prefix}__{dim.name}", "time", _grains(dim.grain), text))
        else:
            out.append(Item(f"{prefix}__{dim.name}", "categorical", (), text))
    if include_entities:
        out += [Item(f"{prefix}__{e.name}", "entity", (), f"{model.name}.{e.name}")
                for e in model.entities if e.name != path[-1]]
    return out


def _walk(resolver: Resolver, model: SemanticModel, path: tuple[str, ...], visited: set[str],
          items: list[Item]) -> None:
    if len(path) >= 3:
        return
    for entity in model.entities:
        if entity.name in path:  # user__user__x is user__x again
            continue
        for target in resolver.targets(model, entity.name):
            if target.name in visited:
                continue
            hop = (*path, entity.name)
            items += _elements(target, hop)
            _walk(resolver, target, hop, visited | {target.name}, items)
