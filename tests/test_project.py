"""Model loading, the DAG, selectors and compilation errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import jinja2
import pytest
import sqlglot
from jinja2.sandbox import SandboxedEnvironment

from runner.context import Context
from runner.errors import CompileError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def _project(tmp_path: Path, name: str) -> Path:
    shutil.copytree(DATA / name, tmp_path / name)
    return tmp_path / name


def test_cycle_names_both_models(tmp_path: Path) -> None:
    ctx = Context(_project(tmp_path, "project_cycle"))
    with pytest.raises(ConfigError) as info:
        ctx.ls()
    message = str(info.value)
    assert "cycle" in message and "a" in message.split("cycle:")[1]
    assert "b" in message.split("cycle:")[1]
    assert info.value.exit_code == 2


def test_missing_ref_names_both_models(tmp_path: Path) -> None:
    project = _project(tmp_path, "project_cycle")
    (project / "models" / "b.sql").write_text("select * from {{ ref('ghost') }}\n")
    with pytest.raises(CompileError, match=r"b.sql: model 'b' refs 'ghost', which is not a model"):
        Context(project).ls()


def test_syntax_error_gives_file_line_column_and_snippet(tmp_path: Path) -> None:
    project = _project(tmp_path, "project_syntax")
    ctx = Context(project)
    with pytest.raises(CompileError) as info:
        ctx.compile()
    err = info.value
    assert err.location is not None
    assert err.location == f"{project / 'models' / 'broken.sql'}:6:10"
    assert err.snippet and "(2 + as two" in err.snippet and "^" in err.snippet


def test_sample_dag_order_and_selectors() -> None:
    ctx = Context(ROOT)
    graph = ctx.compiler().graph
    order = graph.order
    assert order.index("stg_events") < order.index("fct_orders") < order.index("arpu_timeseries")
    assert graph.select(["fct_orders"]) == ["fct_orders"]
    upstream = set(graph.select(["+fct_orders"]))
    assert upstream == {"stg_events", "int_orders", "fct_product_purchases", "fct_orders"}
    downstream = set(graph.select(["category_funnel+"]))
    assert downstream == {"category_funnel", "category_opportunities", "derived_user_segments",
                          "arpu_timeseries", "category_conversion_timeseries"}
    assert set(graph.select(["tag:timeseries"])) == {"arpu_timeseries",
                                                     "category_conversion_timeseries",
                                                     "derived_funnel_periods",
                                                     "derived_user_periods"}
    # a union of selectors, returned in dependency order
    both = graph.select(["fct_orders stg_events"])
    assert both == ["stg_events", "fct_orders"]
    with pytest.raises(ConfigError, match="'nope' matches no model"):
        graph.select(["nope"])


@pytest.mark.parametrize("target", ["duckdb", "postgres", "spark", "snowflake", "bigquery"])
def test_compile_writes_parseable_sql_for_every_target(tmp_path: Path, target: str) -> None:
    project = tmp_path / "p"
    for folder in ("models", "macros"):
        shutil.copytree(ROOT / folder, project / folder)
    shutil.copy(ROOT / "arpu.yml", project / "arpu.yml")
    compiled = Context(project).compile(target)
    assert len(compiled) == len(list((ROOT / "models").rglob("*.sql")))
    dialect = compiled[0].path.parent.name
    for model in compiled:
        assert model.path.exists()
        tree = sqlglot.parse_one(model.path.read_text(), read=dialect)
        assert tree is not None, model.model.name
    assert (project / "target" / "manifest.json").exists()


def test_vars_change_the_compiled_sql(tmp_path: Path) -> None:
    compiler = Context(ROOT).compiler()
    default = compiler.render(compiler.models["derived_funnel_users"])
    ctx = Context(ROOT, vars={"conversion_window_days": 3, "start_date": "2026-02-01"})
    changed = ctx.compiler().render(ctx.compiler().models["derived_funnel_users"])
    assert "interval '7' day" in default and "interval '3' day" in changed
    assert "2026-02-01" in changed and "2026-02-01" not in default


def test_string_vars_are_quoted_literals() -> None:
    ctx = Context(ROOT, vars={"target_category": "x'); drop table fct_orders; --"})
    sql = ctx.compiler().render(ctx.compiler().models["category_opportunities"])
    assert "'x''); drop table fct_orders; --'" in sql
    sqlglot.parse_one(sql, read="duckdb")  # still one statement


def test_dbt_selector_grammar_on_the_graph() -> None:
    """dbt's meaning: a comma intersects, spaces unite, n+ and +n limit the depth, @ adds the
    ancestors of the descendants, --exclude subtracts; the CLI tests drive the same via arpu."""
    graph = Context(ROOT).compiler().graph
    assert graph.select(["+fct_orders,+dim_users"]) == ["stg_events"]
    assert graph.select(["1+fct_orders"]) == ["stg_events", "int_orders",
                                              "fct_product_purchases", "fct_orders"]
    assert set(graph.select(["fct_orders+1"])) == {"fct_orders"} | graph.descendants(
        "fct_orders", 1)
    family = {"int_orders"} | graph.descendants("int_orders")
    assert set(graph.select(["@int_orders"])) == family | {
        a for m in family for a in graph.ancestors(m)}
    assert graph.select(["staging"]) == graph.select(["path:models/staging"]) == ["stg_events"]
    assert "stg_events" not in graph.select(None, ["staging"])
    for refused in ("config.materialized:table", "source:segment", "@a+", "a,", ""):
        with pytest.raises(ConfigError):
            graph.select([refused])


def test_compiled_templates_are_cached_outside_the_project_and_survive_a_bad_entry(
        tmp_path: Path) -> None:
    """Jinja's bytecode cache (per user, never in the project) serves the next process; an
    entry that cannot be read is compiled again, never trusted."""
    import subprocess
    import sys
    import uuid

    from runner.compile import _bytecode_cache, compiled, template

    cache = _bytecode_cache()
    assert cache is not None and not Path(cache.directory).is_relative_to(tmp_path)
    token = uuid.uuid4().hex  # a source no earlier run compiled
    source = "{{ x }} and {% for i in range(n) %}{{ i }}{% endfor %} -- " + token
    before = set(Path(cache.directory).iterdir())
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    assert template(env, source).render(x="a", n=3) == f"a and 012 -- {token}"
    (entry,) = set(Path(cache.directory).iterdir()) - before  # one new file for this source
    assert entry.stat().st_size > 0
    # another process reads it back, and renders the same
    code = ("import sys, jinja2; from jinja2.sandbox import SandboxedEnvironment; "
            "from runner.compile import template; env = SandboxedEnvironment("
            "undefined=jinja2.StrictUndefined); "
            "print(template(env, sys.argv[1]).render(x='b', n=2))")
    done = subprocess.run([sys.executable, "-c", code, source], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == f"b and 01 -- {token}"
    from jinja2.bccache import bc_magic

    for damage in [b"not bytecode" * 10, bc_magic + b"\x80\x05not a pickle"]:
        entry.write_bytes(damage)  # a damaged entry (after Jinja's header too): compiled again
        compiled.cache_clear()
        assert template(env, source).render(x="c", n=1) == f"c and 0 -- {token}"
        assert entry.read_bytes() != damage  # and written again
    assert not list(tmp_path.rglob("__jinja2_*"))
