"""Names as MetricFlow writes them, and what they point at from a measure's semantic model.

`metric_time__week`, `user__segment` (entity path, then the element), `order__ordered_at__month`
(a time dimension at a grain), `user` (an entity); in filters and saved queries
`{{ Dimension('user__segment') }}`, `{{ TimeDimension('metric_time', 'week') }}`,
`{{ Entity('user') }}`, `.grain('month')`, `.descending(True)`. A name is resolved from the
measure's semantic model along entities: left joins to models where the entity is primary,
unique or natural, never one that repeats rows (foreign to foreign, or onto a foreign entity)."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, replace

from sqlglot import exp, parse_one
from sqlglot.errors import ParseError

from runner.dialect import SOURCE_DIALECT
from runner.metrics.spec import (
    GRAINS,
    Measure,
    Ref,
    SemanticManifest,
    SemanticModel,
    grain_rank,
)

METRIC_TIME = "metric_time"
JINJA = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
PLACEHOLDER = "__arpu_ref_"
# left entity type -> right entity types it may join to without repeating rows
# (MetricFlow's SemanticModelJoinEvaluator; natural needs validity dimensions on the right)
JOINS = {"primary": ("primary", "unique", "natural"), "unique": ("primary", "unique", "natural"),
         "foreign": ("primary", "unique", "natural"), "natural": ("primary", "unique")}


class ResolveError(Exception):
    """A name that does not resolve; the caller adds where it was written."""


@dataclass(frozen=True)
class Hop:
    """A left join from `left` to `right` on `entity`."""

    entity: str
    left: str
    right: str


@dataclass(frozen=True)
class Element:
    """A name resolved for one measure: the column and the joins that reach it."""

    name: str  # the output column: MetricFlow's name
    kind: str  # metric_time | time | dimension | entity
    model: str  # the semantic model holding it (the measure's own when hops is empty)
    element: str  # the dimension or entity there
    hops: tuple[Hop, ...] = ()
    grain: str | None = None


def parse_name(text: str) -> Ref:
    """A name from the command line: `metric_time__week`, `user__segment`, `user`."""
    cleaned = text.strip()
    if not re.match(r"\A[a-z][a-z0-9_]*\Z", cleaned):
        raise ResolveError(f"'{text}' is not a name like metric_time__week or user__segment")
    return Ref(tuple(cleaned.split("__")))


def parse_item(text: str) -> Ref:
    """A saved query's group_by or order_by item: a plain name, or MetricFlow's object syntax
    `TimeDimension('metric_time', 'day')`, `Dimension('x').grain('month')`,
    `Metric('revenue').descending(True)` (read with Python's parser, never evaluated)."""
    stripped = text.strip()
    if "(" not in stripped:
        return parse_name(stripped)
    try:
        node = ast.parse(stripped, mode="eval").body
    except SyntaxError:
        raise ResolveError(f"'{text}' is not Dimension(...), TimeDimension(...), Entity(...) "
                           "or Metric(...)") from None
    return _call(node, text)


def _literal(node: ast.expr, text: str) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ResolveError(f"'{text}': arguments must be literals") from None


def _call(node: ast.expr, text: str) -> Ref:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        ref = _call(node.func.value, text)
        method = node.func.attr
        args = [_literal(a, text) for a in node.args]
        if method == "grain" and len(args) == 1 and isinstance(args[0], str):
            return replace(ref, grain=_grain(args[0], text))
        if method == "descending" and len(args) <= 1:
            return replace(ref, descending=bool(args[0]) if args else True)
        if method == "date_part":
            raise ResolveError(f"'{text}': date_part is not supported")
        raise ResolveError(f"'{text}': unknown method .{method}()")
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ResolveError(f"'{text}' is not Dimension(...), TimeDimension(...), Entity(...) "
                           "or Metric(...)")
    kinds = {"Dimension": "dimension", "TimeDimension": "time_dimension", "Entity": "entity",
             "Metric": "metric"}
    kind = kinds.get(node.func.id)
    if kind is None:
        raise ResolveError(f"'{text}': {node.func.id}() is not one of {', '.join(kinds)}")
    args = [_literal(a, text) for a in node.args]
    kwargs = {k.arg: _literal(k.value, text) for k in node.keywords}
    if not args or not isinstance(args[0], str):
        raise ResolveError(f"'{text}': {node.func.id}() needs a name")
    if kind == "metric":
        if kwargs.get("group_by") or len(args) > 1:
            raise ResolveError(f"'{text}': metric filters (Metric(..., group_by=...)) are not "
                               "supported")
        return Ref((args[0],), kind="metric")
    grain = args[1] if len(args) > 1 else kwargs.get("time_granularity_name",
                                                     kwargs.get("grain"))
    if kwargs.get("date_part_name"):
        raise ResolveError(f"'{text}': date_part_name is not supported")
    path = kwargs.get("entity_path") or []
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise ResolveError(f"'{text}': entity_path must be a list of entity names")
    parts = tuple(path) + tuple(args[0].split("__"))
    return Ref(parts, kind=kind, grain=_grain(grain, text) if isinstance(grain, str) else None)


def _grain(value: str, text: str) -> str:
    if value.lower() not in GRAINS:
        raise ResolveError(f"'{text}': '{value}' is not a granularity ({', '.join(GRAINS)})")
    return value.lower()


@dataclass(frozen=True)
class Filter:
    """A where filter: SQL in DuckDB's dialect with `{{ ... }}` references, parsed once; the
    references become placeholder columns that the SQL generator replaces per measure."""

    text: str
    condition: exp.Expression
    refs: tuple[Ref, ...]


@functools.lru_cache(maxsize=512)
def parse_filter(text: str) -> Filter:
    refs: list[Ref] = []

    def placeholder(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        ref = parse_item(inner) if "(" in inner else None
        if ref is None:
            raise ResolveError(f"'{{{{ {inner} }}}}' is not Dimension(...), TimeDimension(...) "
                               "or Entity(...)")
        if ref.kind == "metric":
            raise ResolveError("Metric() in a filter is not supported")
        refs.append(ref)
        return f"{PLACEHOLDER}{len(refs) - 1}"

    sql = JINJA.sub(placeholder, text)
    if "{%" in sql or "{{" in sql or "}}" in sql:
        raise ResolveError(f"filter '{text}': only {{{{ Dimension(...) }}}}, TimeDimension and "
                           "Entity references are allowed")
    try:
        condition = parse_one(sql, read=SOURCE_DIALECT)
    except ParseError as exc:
        raise ResolveError(f"filter '{text}' is not a SQL condition: "
                           f"{str(exc).splitlines()[0]}") from None
    if not isinstance(condition, exp.Expression) or isinstance(
            condition, (exp.Query, exp.Command)):
        raise ResolveError(f"filter '{text}' is not a SQL condition")
    for node in condition.walk():
        if isinstance(node, (exp.Subquery, exp.Select)):
            raise ResolveError(f"filter '{text}': subqueries are not allowed")
    return Filter(text, condition, tuple(refs))


class Resolver:
    """Names resolved against the semantic models, cached per (name, semantic model)."""

    def __init__(self, manifest: SemanticManifest) -> None:
        self.manifest = manifest
        self.models = manifest.semantic_models
        self._cache: dict[tuple[Ref, str, str | None], Element] = {}

    # -- entities and joins --------------------------------------------------------------
    def primary_entity(self, model: SemanticModel) -> str | None:
        if model.primary_entity:
            return model.primary_entity
        return next((e.name for e in model.entities if e.type == "primary"), None)

    def join_problem(self, left: SemanticModel, right: SemanticModel, entity: str) -> str | None:
        """Why `left` may not join `right` on `entity` (None: it may)."""
        a, b = left.entity(entity), right.entity(entity)
        if a is None or b is None:
            return f"'{entity}' is not an entity of both"
        if b.type == "natural" and right.validity is None:
            return (f"'{right.name}' has '{entity}' as a natural entity without validity "
                    "dimensions (is_start / is_end)")
        if left.validity is not None and right.validity is not None:
            return "both have validity dimensions"
        if b.type not in JOINS[a.type]:
            return (f"joining {a.type} '{entity}' of '{left.name}' to {b.type} '{entity}' of "
                    f"'{right.name}' would repeat rows (fan-out)")
        return None

    def targets(self, left: SemanticModel, entity: str) -> list[SemanticModel]:
        return [m for m in self.models.values() if m.name != left.name
                and m.entity(entity) is not None and self.join_problem(left, m, entity) is None]

    # -- names ---------------------------------------------------------------------------
    def metric_time(self, measure: Measure, grain: str | None) -> Element:
        model = self.manifest.model_of(measure)
        dim = model.dimension(measure.agg_time_dimension or "")
        assert dim is not None and dim.grain is not None  # checked when the manifest loads
        chosen = grain or dim.grain
        if grain_rank(chosen) < grain_rank(dim.grain):
            raise ResolveError(f"metric_time__{chosen} is finer than '{dim.name}' of "
                               f"'{model.name}' ({dim.grain})")
        return Element(f"{METRIC_TIME}__{chosen}", "metric_time", model.name, dim.name, (),
                       chosen)

    def element(self, ref: Ref, measure: Measure) -> Element:
        key = (ref, measure.semantic_model, measure.agg_time_dimension)
        if key not in self._cache:
            self._cache[key] = self._element(ref, measure)
        return self._cache[key]

    def _element(self, ref: Ref, measure: Measure) -> Element:
        parts, grain = list(ref.parts), ref.grain
        if ref.kind in ("any", "time_dimension") and grain is None and len(parts) > 1 \
                and parts[-1] in GRAINS:
            try:  # `<...>__<grain>`: a time dimension at a grain, if it is one
                return self._element(replace(ref, parts=tuple(parts[:-1]), grain=parts[-1],
                                             kind="time_dimension"), measure)
            except ResolveError as exc:
                if ref.kind == "time_dimension" or parts[:-1] == [METRIC_TIME]:
                    raise
                try:  # else a dimension named like a grain; failing that, the grain's error
                    return self._plain(ref, measure)
                except ResolveError:
                    raise exc from None
        return self._plain(ref, measure)

    def _plain(self, ref: Ref, measure: Measure) -> Element:
        parts, grain = list(ref.parts), ref.grain
        if parts == [METRIC_TIME]:
            if ref.kind in ("dimension", "entity"):
                raise ResolveError("metric_time is a time dimension: use TimeDimension("
                                   "'metric_time', '<grain>') or metric_time__<grain>")
            return self.metric_time(measure, grain)
        model = self.manifest.model_of(measure)
        if len(parts) == 1:  # an entity of the measure's model
            if ref.kind in ("dimension", "time_dimension"):
                raise ResolveError(f"'{ref.text}': a dimension is named <entity>__<dimension>")
            if model.entity(parts[0]) is None:
                raise ResolveError(f"'{parts[0]}' is not an entity of semantic model "
                                   f"'{model.name}'")
            return Element(parts[0], "entity", model.name, parts[0])
        found = self._walk(model, parts[:-1], parts[-1], (), ref)
        if not found:
            raise ResolveError(self._why_not(model, parts, ref))
        if len({(e.model, e.hops) for e in found}) > 1:
            where = ", ".join(sorted({e.model for e in found}))
            raise ResolveError(f"'{ref.text}' is ambiguous from '{model.name}': it is in {where}")
        element = found[0]
        if element.kind == "time":
            target = self.models[element.model].dimension(element.element)
            assert target is not None and target.grain is not None
            chosen = grain or target.grain
            if grain_rank(chosen) < grain_rank(target.grain):
                raise ResolveError(f"'{ref.text}' is finer than its granularity "
                                   f"({target.grain})")
            name = "__".join(parts) + f"__{chosen}"
            return replace(element, name=name, grain=chosen)
        if grain is not None:
            raise ResolveError(f"'{'__'.join(parts)}' is not a time dimension: it takes no "
                               "granularity")
        return element

    def _walk(self, model: SemanticModel, path: list[str], leaf: str, hops: tuple[Hop, ...],
              ref: Ref) -> list[Element]:
        entity = path[0]
        primary = self.primary_entity(model) == entity  # may be `primary_entity:` alone
        if model.entity(entity) is None and not primary:
            return []
        found: list[Element] = []
        name = "__".join([*path, leaf]) if not hops else ""
        if len(path) == 1 and primary:
            local = self._local(model, leaf, hops, ref)
            if local is not None:
                found.append(local)
        if len(hops) < 3 and model.entity(entity) is not None:  # MetricFlow allows 3 hops
            found.extend(self._joined(model, path, leaf, hops, ref))
        return [replace(e, name=name or e.name) for e in found]

    def _joined(self, model: SemanticModel, path: list[str], leaf: str, hops: tuple[Hop, ...],
                ref: Ref) -> list[Element]:
        entity = path[0]
        found: list[Element] = []
        for target in self.targets(model, entity):
            hop = (*hops, Hop(entity, model.name, target.name))
            if len(path) == 1:
                local = self._local(target, leaf, hop, ref)
                if local is not None:
                    found.append(local)
            else:
                found.extend(self._walk(target, path[1:], leaf, hop, ref))
        return found

    @staticmethod
    def _local(model: SemanticModel, leaf: str, hops: tuple[Hop, ...], ref: Ref
               ) -> Element | None:
        dim = model.dimension(leaf)
        if dim is not None and ref.kind != "entity":
            if ref.kind == "time_dimension" and dim.type != "time":
                return None
            kind = "time" if dim.type == "time" else "dimension"
            return Element("", kind, model.name, leaf, hops)
        if model.entity(leaf) is not None and ref.kind in ("any", "entity"):
            return Element("", "entity", model.name, leaf, hops)
        return None

    def _why_not(self, model: SemanticModel, parts: list[str], ref: Ref) -> str:
        entity, leaf = parts[0], parts[-1]
        text = ref.text
        if model.entity(entity) is None and self.primary_entity(model) != entity:
            have = ", ".join(e.name for e in model.entities) or "none"
            return (f"'{text}': '{entity}' is not an entity of semantic model '{model.name}' "
                    f"(its entities: {have})")
        for other in self.models.values():
            if other.name == model.name or other.entity(entity) is None:
                continue
            problem = self.join_problem(model, other, entity)
            if problem and (other.dimension(leaf) is not None or len(parts) > 2):
                return f"'{text}' cannot be reached from '{model.name}': {problem}"
        if ref.kind == "time_dimension":
            return f"'{text}': no time dimension '{leaf}' is reachable from '{model.name}'"
        return (f"'{text}': no semantic model joined on '{entity}' from '{model.name}' has "
                f"{'an entity' if ref.kind == 'entity' else 'a dimension'} '{leaf}'")
