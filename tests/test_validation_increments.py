"""An incremental build validates what its increment could have broken: row checks and key
uniqueness on the rows it wrote (`updated_load` = its load), the rest on the whole relation; a
failure is decided over the whole relation, so it reads as it would after a full build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.project import ProjectHarness

from runner.artifacts import BuildResult
from runner.engines.duckdb import DuckDBEngine

STG_YML = Path("models") / "staging" / "stg_events.yml"


def _view(message_id: str, day: int, line_user: str | None = "u1", **fields: Any) -> str:
    ids = {"userId": line_user} if line_user else {"anonymousId": f"anon-{message_id}"}
    return json.dumps({"type": "track", "event": "Product Viewed", "messageId": message_id,
                       "timestamp": f"2026-03-{day:02d}T10:00:00Z", **ids,
                       "properties": {"category": "Toys", "price": 10}, **fields})


FIRST = [_view(f"m{i}", 2 + i) for i in range(4)]
SECOND = [_view("n1", 9), _view("n2", 10)]


def _expect(project: ProjectHarness, *items: dict[str, Any]) -> None:
    """Append expectations to the project's stg_events.yml."""
    path = project.root / STG_YML
    data = yaml.safe_load(path.read_text())
    data["expectations"] += list(items)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _load(project: ProjectHarness, lines: list[str], name: str) -> None:
    path = project.root / f"{name}.ndjson"
    path.write_text("\n".join(lines) + "\n")
    project.ingest(path)


def _incremental(tmp_path: Path, first: list[str], second: list[str],
                 *expectations: dict[str, Any]) -> tuple[ProjectHarness, BuildResult]:
    """A full build of `first`, then `second` ingested and built as an increment (with
    `expectations` added to stg_events before either)."""
    project = ProjectHarness(tmp_path / "project")
    _expect(project, *expectations)
    _load(project, first, "first")
    assert project.build().success
    _load(project, second, "second")
    with project.context() as ctx:
        result = ctx.build()
    stg = next(r for r in result.results if r.model == "stg_events")
    assert str(stg.compiled_path).endswith(".incremental.sql")  # it did continue
    return project, result


def _expectation(result: BuildResult, model: str, name: str) -> dict[str, Any]:
    res = next(r for r in result.results if r.model == model)
    return next(e for e in res.expectations if e["expectation"] == name)


def _whole(project: ProjectHarness) -> BuildResult:
    with project.context() as ctx:
        return ctx.build(full_refresh=True)


@pytest.mark.parametrize(("first", "second", "item", "name"), [
    # a null the increment wrote
    (FIRST, [*SECOND, _view("n3", 11, line_user=None)],
     {"type": "expect_column_values_to_not_be_null", "column": "user_id"},
     "expect_column_values_to_not_be_null(user_id)"),
    # a bad value the increment wrote (every older row is in load 1)
    (FIRST, SECOND,
     {"type": "expect_column_values_to_be_between", "column": "load_id", "max_value": 1},
     "expect_column_values_to_be_between(load_id, max_value=1)"),
    # a key the increment wrote that an older row has (line numbers restart with each file)
    (FIRST, SECOND, {"type": "expect_column_values_to_be_unique", "column": "line_number"},
     "expect_column_values_to_be_unique(line_number)"),
    (FIRST, SECOND, {"type": "expect_compound_columns_to_be_unique",
                     "column_list": ["line_number", "event_name"]},
     "expect_compound_columns_to_be_unique(line_number, event_name)"),
])
def test_what_an_increment_breaks_fails_it_as_a_full_build_would(
        tmp_path: Path, first: list[str], second: list[str], item: dict[str, Any],
        name: str) -> None:
    project, result = _incremental(tmp_path, first, second, item)
    stg = next(r for r in result.results if r.model == "stg_events")
    assert stg.status == "error" and name in str(stg.error)
    failed = _expectation(result, "stg_events", name)
    assert not failed["success"] and failed["severity"] == "error"
    # the same observed value and failing rows as the same data built whole
    whole = _whole(project)
    assert not whole.success
    same = _expectation(whole, "stg_events", name)
    assert {k: failed[k] for k in ("observed", "failing_examples", "severity")} == {
        k: same[k] for k in ("observed", "failing_examples", "severity")}


def test_a_warning_on_older_rows_still_warns(tmp_path: Path) -> None:
    """A `warn` that failed on rows an earlier build published goes on warning, though the
    increment's rows pass it: warnings are checked on the whole relation."""
    item = {"type": "expect_column_values_to_not_be_null", "column": "user_id",
            "severity": "warn"}
    _, result = _incremental(tmp_path, [*FIRST, _view("m9", 20, line_user=None)], SECOND, item)
    assert result.success
    warned = _expectation(result, "stg_events", "expect_column_values_to_not_be_null(user_id)")
    assert not warned["success"] and warned["severity"] == "warn"


def test_an_increment_checks_the_rows_it_wrote(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-check of an increment's model reads the rows stamped with the build's load
    for its row checks and key, and counts them against what the engine wrote."""
    seen: list[tuple[str, Any]] = []
    fetch = DuckDBEngine.fetch

    def spy(self: DuckDBEngine, sql: str, params: Any = None) -> Any:
        out = fetch(self, sql, params)
        seen.append((sql, out))
        return out

    project = ProjectHarness(tmp_path / "project")
    _load(project, FIRST, "first")
    assert project.build().success
    _load(project, SECOND, "second")
    monkeypatch.setattr(DuckDBEngine, "fetch", spy)
    with project.context() as ctx:
        result = ctx.build()
    assert result.success
    batch = 2
    stg = next(r for r in result.results if r.model == "stg_events")
    assert stg.rows == len(SECOND)
    on_stg = [(sql, out) for sql, out in seen if 'from "stg_events"' in sql]
    # one pass over the written rows: their count (as many as the merge wrote) and the nulls
    rows = [(sql, out) for sql, out in on_stg
            if f'"updated_load" = {batch}' in sql and '"user_key" is null' in sql]
    assert len(rows) == 1 and rows[0][1][1][0][0] == len(SECOND)
    # event_id's uniqueness among the rows sharing a key with a written row
    assert any('"event_id" in (select "event_id"' in sql for sql, _ in on_stg)
    # no row check and no key over the whole relation
    whole = [sql for sql, _ in on_stg if '"user_key" is null' in sql
             and '"updated_load"' not in sql]
    assert whole == [] and not any('"event_id") end)' in sql and "where" not in sql
                                   for sql, _ in on_stg)


def test_a_full_refresh_checks_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    seen: list[str] = []
    fetch = DuckDBEngine.fetch

    def spy(self: DuckDBEngine, sql: str, params: Any = None) -> Any:
        seen.append(sql)
        return fetch(self, sql, params)

    project = ProjectHarness(tmp_path / "project")
    _load(project, FIRST, "first")
    assert project.build().success
    _load(project, SECOND, "second")
    monkeypatch.setattr(DuckDBEngine, "fetch", spy)
    assert _whole(project).success
    assert not any('"updated_load" = ' in sql for sql in seen)
    assert any('"user_key" is null' in sql and "stg_events" in sql for sql in seen)


def test_rows_named_wrongly_are_checked_whole(tmp_path: Path) -> None:
    """The narrowed pre-check trusts `where` only when it names as many rows as the engine
    wrote: an older row that breaks a check passes unseen when the count agrees (what the
    older rows are taken to be: checked when their build published), and fails the pre-check
    when it does not."""
    from support.project import scratch_build

    from runner.quality.spec import WrittenRows
    from runner.quality.sqlcheck import all_pass
    from runner.quality.validator import Validator

    project = ProjectHarness(tmp_path / "project")
    _load(project, FIRST, "first")
    assert project.build().success
    _load(project, SECOND, "second")
    assert project.build().success
    with project.context() as ctx:
        engine, compiler = scratch_build(ctx), ctx.compiler()
        engine.execute("update stg_events set user_key = null where event_id = 'm0'")
        relation = compiler.relation("stg_events")
        with Validator(ctx.project_dir, engine, compiler.relation,
                       ctx.config.vars.model_dump(), graph=compiler.graph, fast=True
                       ) as validator:
            specs = validator.suite_for(compiler.models["stg_events"])
        assert not all_pass(engine, relation, specs)
        assert all_pass(engine, relation, specs, WrittenRows('"updated_load" = 2', 2))
        assert not all_pass(engine, relation, specs, WrittenRows('"updated_load" = 2', 3))
        assert not all_pass(engine, relation, specs, WrittenRows('"updated_load" >= 1', 2))
