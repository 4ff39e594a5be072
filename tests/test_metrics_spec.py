"""metrics/*.yml: dbt's Semantic Layer YAML read and checked when it loads. Each broken
definition is one error naming the file and the line (exit 2): the cases below break the
shipped metrics/recipe.yml one way each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.project import ROOT, run_arpu

from runner.errors import ConfigError
from runner.metrics.query import SemanticLayer

MODELS = sorted(p.stem for p in (ROOT / "models").rglob("*.sql"))
RECIPE = (ROOT / "metrics" / "recipe.yml").read_text()


def load(tmp_path: Path, text: str, name: str = "recipe.yml") -> SemanticLayer:
    folder = tmp_path / "metrics"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return SemanticLayer(tmp_path, MODELS)


def line_of(text: str, fragment: str, nth: int = 0) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return lines[nth]


def test_recipe_loads(tmp_path: Path) -> None:
    layer = load(tmp_path, RECIPE)
    metrics = layer.planner.metrics
    for name in ("revenue", "orders", "aov", "active_users", "arpu", "arppu", "buyers",
                 "view_to_purchase_rate"):
        assert name in metrics
    assert {m.type for m in metrics.values()} == {"simple", "ratio", "derived", "cumulative",
                                                  "conversion"}
    conversion = metrics["view_to_purchase_rate"].conversion
    assert conversion is not None and conversion.entity == "user"
    assert str(conversion.window) == "7 days"
    assert [(c.base_property, c.conversion_property) for c in conversion.constant_properties] \
        == [("category", "category")]
    assert set(layer.manifest.saved_queries) == {"weekly_arpu", "category_conversion"}


# (text replaced, replacement, the line's text after the change, what the error says)
BROKEN = [
    ("agg: sum\n        expr: revenue", "agg: total\n        expr: revenue", "agg: total",
     "agg: 'total' is not one of sum, count"),
    ("      - name: currency\n        type: categorical",
     "      - name: currency\n        type: categorical\n        colour: red", "colour: red",
     "unknown key 'colour'"),
    ("model: ref('fct_orders')", "model: ref('fct_order')", "- name: orders",
     "model 'fct_order' is not a model of this project"),
    ("agg_time_dimension: ordered_at", "agg_time_dimension: currency",
     "agg_time_dimension: currency", "'currency' is a categorical dimension, not a time"),
    ("      measure: order_count\n", "      measure: order_cnt\n", "measure: order_cnt",
     "'order_cnt' is not a measure"),
    ("numerator: revenue\n      denominator: orders",
     "numerator: order_revenue\n      denominator: orders", "numerator: order_revenue",
     "'order_revenue' is not a metric (it is a measure"),
    ("Dimension('user__segment') }} = 'cohort'", "Dimension('user__segmant') }} = 'cohort'",
     "user__segmant", "'user__segmant': no semantic model joined on 'user'"),
    ("Dimension('user__segment') }} = 'cohort'",
     "TimeDimension('user__segment', 'week') }} = 'cohort'", "TimeDimension('user__segment'",
     "no time dimension 'segment'"),
    ("window: 7 days\n        calculation: conversion_rate",
     "window: 7 dayz\n        calculation: conversion_rate", "window: 7 dayz",
     "'7 dayz' is not a window"),
    ("expr: (revenue - revenue_last_week) / nullif(revenue_last_week, 0)",
     "expr: (revenue - revenue_last_wk) / nullif(revenue_last_week, 0)",
     "- name: revenue_wow_growth", "expr uses revenue_last_wk, which is not among"),
    ("      measure: product_viewers\n", "      measure: product_viewers\n"
     "    filter: \"{{ Dimension('user__category') }} = 'x'\"\n",
     "Dimension('user__category')", "joining foreign 'user' of 'product_views' to foreign "
     "'user' of 'order_lines' would repeat rows (fan-out)"),
    ("- base_property: category", "- base_property: colour", "- name: view_to_purchase_rate",
     "constant property 'colour'"),
]


@pytest.mark.parametrize("old,new,at,message", BROKEN, ids=[b[3][:40] for b in BROKEN])
def test_broken_definition_names_file_and_line(tmp_path: Path, old: str, new: str, at: str,
                                               message: str) -> None:
    assert old in RECIPE
    text = RECIPE.replace(old, new, 1)
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    assert message in error.value.message
    assert error.value.location == f"metrics/recipe.yml:{line_of(text, at)}"


def test_fan_out_join_is_refused_naming_the_line(tmp_path: Path) -> None:
    """A dimension only reachable foreign -> foreign would repeat rows: refused at load."""
    extra = """
semantic_models:
  - name: sessions
    model: ref('stg_events')
    primary_entity: session
    defaults: {agg_time_dimension: event_ts}
    entities:
      - {name: order, type: foreign, expr: event_id}
    dimensions:
      - {name: event_ts, type: time, type_params: {time_granularity: day}}
      - {name: browser, type: categorical, expr: event_name}
metrics:
  - name: revenue_by_browser
    type: simple
    type_params: {measure: order_revenue}
    filter: "{{ Dimension('order__browser') }} = 'x'"
"""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "recipe.yml").write_text(RECIPE)
    with pytest.raises(ConfigError) as error:
        load(tmp_path, extra, "extra.yml")
    assert "fan-out" in error.value.message
    assert error.value.location == f"metrics/extra.yml:{line_of(extra, 'filter:')}"


def test_duplicate_metric_names_the_first_definition(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "a.yml").write_text(RECIPE)
    copy = "metrics:\n  - name: arpu\n    type: simple\n    type_params: {measure: order_count}\n"
    with pytest.raises(ConfigError) as error:
        load(tmp_path, copy, "b.yml")
    assert error.value.location == "metrics/b.yml:2"
    assert f"already defined at metrics/a.yml:{line_of(RECIPE, '- name: arpu')}" in \
        error.value.message


def test_a_cycle_of_derived_metrics_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "recipe.yml").write_text(RECIPE)
    loop = """metrics:
  - name: loop_a
    type: derived
    type_params: {expr: loop_b + 1, metrics: [{name: loop_b}]}
  - name: loop_b
    type: derived
    type_params: {expr: loop_a + 1, metrics: [{name: loop_a}]}
"""
    with pytest.raises(ConfigError) as error:
        load(tmp_path, loop, "loop.yml")
    assert "depends on itself: loop_a -> loop_b -> loop_a" in error.value.message
    assert error.value.location == "metrics/loop.yml:2"


def test_not_yaml_names_the_line(tmp_path: Path) -> None:
    text = "metrics:\n  - name: a\n    type: [simple\n"
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    assert error.value.location is not None
    assert error.value.location.startswith("metrics/recipe.yml:")


def test_cli_exit_2_one_line(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "arpu.yml", project / "arpu.yml")
    shutil.copytree(ROOT / "models", project / "models")
    (project / "metrics").mkdir()
    (project / "metrics" / "recipe.yml").write_text(RECIPE.replace("agg: count_distinct",
                                                                   "agg: distinct", 1))
    out = run_arpu(project, "query", "--metrics", "arpu", "--explain")
    assert out.returncode == 2, out.stderr
    line = line_of(RECIPE, "agg: count_distinct")
    assert out.stderr.strip() == (f"Error: metrics/recipe.yml:{line}: agg: 'distinct' is not one "
                                  "of sum, count, count_distinct, average, min, max, median, "
                                  "percentile, sum_boolean")
    (project / "metrics" / "recipe.yml").write_text(RECIPE)
    out = run_arpu(project, "query", "--metrics", "arpux", "--explain")
    assert out.returncode == 2
    assert "unknown metric 'arpux' (did you mean 'arpu'?)" in out.stderr


def test_an_export_may_not_replace_a_model(tmp_path: Path) -> None:
    text = RECIPE.replace("      - name: weekly_arpu\n", "      - name: fct_orders\n", 1)
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    assert "would write 'fct_orders', a relation arpu builds" in error.value.message
    assert error.value.location == f"metrics/recipe.yml:{line_of(text, '- name: fct_orders')}"


def test_a_broken_metrics_file_stops_the_build_before_any_model(tmp_path: Path) -> None:
    """As dbt parses the whole project first: before, every model ran (and the sample loaded)
    and the build failed at the saved queries' exports."""
    project = tmp_path / "project"
    for folder in ("models", "macros", "seeds"):
        shutil.copytree(ROOT / folder, project / folder)
    shutil.copy(ROOT / "arpu.yml", project / "arpu.yml")
    (project / "metrics").mkdir()
    (project / "metrics" / "recipe.yml").write_text(RECIPE.replace("agg: count_distinct",
                                                                   "agg: distinct", 1))
    out = run_arpu(project, "build")
    assert out.returncode == 2, out.stdout + out.stderr
    line = line_of(RECIPE, "agg: count_distinct")
    assert f"Error: metrics/recipe.yml:{line}: agg: 'distinct'" in out.stderr
    assert "success" not in out.stdout and "loaded the bundled sample" not in out.stdout
    results = json.loads((project / "target" / "run_results.json").read_text())
    assert results["results"] == [] and "recipe.yml" in results["error"], results
