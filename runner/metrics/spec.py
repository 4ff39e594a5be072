"""The semantic layer's definitions, typed: dbt's Semantic Layer YAML (the spec MetricFlow and
dbt-semantic-interfaces parse) as arpu reads it from `metrics/*.yml`. Every object remembers the
file and line it came from, for one-line errors. `runner/metrics/load.py` builds them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# MetricFlow's standard granularities, finest first
GRAINS = ("nanosecond", "microsecond", "millisecond", "second", "minute", "hour", "day", "week",
          "month", "quarter", "year")
# what a time dimension can be grouped by in arpu (the spine and periods are days or coarser)
QUERY_GRAINS = GRAINS
PERIOD_GRAINS = ("day", "week", "month", "quarter", "year")
AGGREGATIONS = ("sum", "count", "count_distinct", "average", "min", "max", "median", "percentile",
                "sum_boolean")
ENTITY_TYPES = ("primary", "unique", "foreign", "natural")
METRIC_TYPES = ("simple", "ratio", "derived", "cumulative", "conversion")


def grain_rank(grain: str) -> int:
    return GRAINS.index(grain)


@dataclass(frozen=True)
class Where:
    """Where a definition is written: `metrics/recipe.yml:12`."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Window:
    """`7 days`, `1 month`: a count of a granularity."""

    count: int
    grain: str

    def __str__(self) -> str:
        return f"{self.count} {self.grain}{'s' if self.count != 1 else ''}"


@dataclass
class Entity:
    name: str
    type: str  # primary | unique | foreign | natural
    expr: str
    where: Where
    role: str | None = None


@dataclass
class Dimension:
    name: str
    type: str  # categorical | time
    expr: str
    where: Where
    grain: str | None = None  # time dimensions: type_params.time_granularity
    is_start: bool = False  # validity_params of an SCD type II model (natural entities)
    is_end: bool = False
    description: str = ""
    label: str | None = None


@dataclass(frozen=True)
class NonAdditive:
    """`non_additive_dimension`: aggregate only the rows at the first (min) or last (max) value of
    a time dimension, per `window_groupings` entities (balances, snapshots)."""

    name: str
    window_choice: str  # min | max
    window_groupings: tuple[str, ...] = ()


@dataclass
class Measure:
    name: str
    agg: str
    expr: str
    semantic_model: str
    where: Where
    agg_time_dimension: str | None = None  # resolved from the model's defaults by the loader
    percentile: float | None = None
    use_discrete_percentile: bool = False
    non_additive: NonAdditive | None = None
    create_metric: bool = False
    description: str = ""
    label: str | None = None


@dataclass
class SemanticModel:
    name: str
    model: str  # the arpu model (relation) of `model: ref('...')`
    where: Where
    description: str = ""
    label: str | None = None
    primary_entity: str | None = None  # the `primary_entity` key, or the entity of type primary
    default_agg_time_dimension: str | None = None
    defaults_where: Where | None = None
    entities: list[Entity] = field(default_factory=list)
    dimensions: list[Dimension] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)

    def entity(self, name: str) -> Entity | None:
        return next((e for e in self.entities if e.name == name), None)

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)

    def measure(self, name: str) -> Measure | None:
        return next((m for m in self.measures if m.name == name), None)

    @property
    def validity(self) -> tuple[Dimension, Dimension] | None:
        start = next((d for d in self.dimensions if d.is_start), None)
        end = next((d for d in self.dimensions if d.is_end), None)
        return (start, end) if start is not None and end is not None else None


@dataclass(frozen=True)
class MeasureInput:
    """A measure as a metric takes it: `measure: name` or `{name, filter, alias, fill_nulls_with,
    join_to_timespine}`."""

    name: str
    where: Where
    filters: tuple[str, ...] = ()
    alias: str | None = None
    fill_nulls_with: int | None = None
    join_to_timespine: bool = False


@dataclass(frozen=True)
class MetricInput:
    """A metric as a ratio or derived metric takes it."""

    name: str
    where: Where
    filters: tuple[str, ...] = ()
    alias: str | None = None
    offset_window: Window | None = None
    offset_to_grain: str | None = None

    @property
    def output(self) -> str:
        return self.alias or self.name


@dataclass(frozen=True)
class ConstantProperty:
    base_property: str
    conversion_property: str


@dataclass(frozen=True)
class Conversion:
    base_measure: MeasureInput
    conversion_measure: MeasureInput
    entity: str
    calculation: str = "conversion_rate"  # conversion_rate | conversions
    window: Window | None = None
    constant_properties: tuple[ConstantProperty, ...] = ()


@dataclass
class Metric:
    name: str
    type: str
    where: Where
    description: str = ""
    label: str | None = None
    filters: tuple[str, ...] = ()
    filter_where: Where | None = None  # the `filter:` line
    time_granularity: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # simple and cumulative
    measure: MeasureInput | None = None
    # cumulative over a metric (MetricFlow's newer `cumulative_type_params.metric`)
    input_metric: str | None = None
    # ratio
    numerator: MetricInput | None = None
    denominator: MetricInput | None = None
    # derived
    expr: str | None = None
    inputs: tuple[MetricInput, ...] = ()
    # cumulative
    window: Window | None = None
    grain_to_date: str | None = None
    period_agg: str = "first"  # first | last | average
    # conversion
    conversion: Conversion | None = None

    @property
    def closed_window(self) -> bool:
        """A conversion within `e <= p <= e + window` (SPEC's funnel, Mixpanel's) instead of
        MetricFlow's `e <= p < e + window`: `config: {meta: {arpu_window_end: inclusive}}`."""
        return self.meta.get("arpu_window_end") == "inclusive"


@dataclass(frozen=True)
class Export:
    name: str
    export_as: str  # table | view
    where: Where
    schema: str | None = None
    alias: str | None = None

    @property
    def relation(self) -> str:
        return self.alias or self.name


@dataclass
class SavedQuery:
    name: str
    where: Where
    metrics: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    limit: int | None = None
    exports: tuple[Export, ...] = ()
    description: str = ""
    label: str | None = None


@dataclass
class SemanticManifest:
    """Everything under `metrics/`: semantic models, metrics and saved queries by name."""

    semantic_models: dict[str, SemanticModel] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    saved_queries: dict[str, SavedQuery] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def measures(self) -> dict[str, Measure]:
        return {m.name: m for sm in self.semantic_models.values() for m in sm.measures}

    def measure(self, name: str) -> Measure | None:
        for model in self.semantic_models.values():
            found = model.measure(name)
            if found is not None:
                return found
        return None

    def model_of(self, measure: Measure) -> SemanticModel:
        return self.semantic_models[measure.semantic_model]


@dataclass(frozen=True)
class Ref:
    """A group-by item, filter reference or order-by item as written."""

    parts: tuple[str, ...]  # the name split on '__'
    kind: str = "any"  # any | dimension | time_dimension | entity | metric
    grain: str | None = None  # an explicit grain (TimeDimension's second argument, .grain())
    descending: bool = False

    @property
    def text(self) -> str:
        return "__".join(self.parts) + (f"__{self.grain}" if self.grain else "")


@dataclass
class QueryRequest:
    """What `arpu query` asks: names as MetricFlow writes them."""

    metrics: list[str]
    group_by: list[str | Ref] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    order_by: list[str | Ref] = field(default_factory=list)
    limit: int | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
