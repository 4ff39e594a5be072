"""Where expectations are declared: project-wide defaults, the model's header and
`<model>.yml` beside it (the order and format are in runner/quality/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runner.config import FAST_YAML
from runner.errors import ConfigError
from runner.quality.spec import SEVERITIES, UNEXPECTED_ROWS, ExpectationSpec

if TYPE_CHECKING:
    from runner.project import Model

_TYPE_ALIASES = {"unexpected_rows_expectation": UNEXPECTED_ROWS}


class _LineLoader(FAST_YAML):  # type: ignore[misc,valid-type]
    """SafeLoader (libyaml's when present: 10x faster) that remembers the line of every
    mapping (key `__line__`)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = dict(loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expectations_file(model: Model) -> Path:
    """`models/<layer>/<model>.yml`, beside the model's SQL file."""
    return model.path.with_suffix(".yml")


def read_expectations_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          location=where) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with `expectations:`", location=str(path))
    line = data.pop("__line__", None)
    unknown = sorted(set(data) - {"expectations"})
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' (only `expectations:`)",
                          location=f"{path}:{line}" if line else str(path))
    items = data.get("expectations") or []
    if not isinstance(items, list):
        raise ConfigError("`expectations` must be a list", location=str(path))
    return items


def _without_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_without_lines(v) for v in value]
    return value


def specs_from_items(relation: str, items: list[Any], path: Path) -> list[ExpectationSpec]:
    specs: list[ExpectationSpec] = []
    for index, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise ConfigError(f"expectation #{index + 1} must be a mapping with `type:`",
                              location=str(path))
        line = raw.get("__line__")
        item = _without_lines(raw)
        where = f"{path}:{line}" if line else str(path)
        kind = item.pop("type", None)
        if not isinstance(kind, str) or not kind:
            raise ConfigError("an expectation needs `type:` (e.g. expect_column_values_to_be_"
                              "unique, or unexpected_rows)", location=where)
        kind = _TYPE_ALIASES.get(kind, kind)
        if kind != UNEXPECTED_ROWS and not kind.startswith("expect_"):
            raise ConfigError(f"'{kind}' is not a Great Expectations expectation "
                              "(expect_...) or unexpected_rows", location=where)
        severity = item.pop("severity", "error")
        if severity not in SEVERITIES:
            raise ConfigError(f"severity must be error or warn, not '{severity}'",
                              location=where)
        description = str(item.pop("description", "") or "")
        requires = item.pop("requires", []) or []
        if isinstance(requires, str):
            requires = [requires]
        if kind == UNEXPECTED_ROWS:
            query = item.pop("query", None) or item.pop("unexpected_rows_query", None)
            if not isinstance(query, str) or not query.strip():
                raise ConfigError("unexpected_rows needs `query:` (SQL returning the rows that "
                                  "violate the expectation)", location=where)
            if item:
                raise ConfigError(f"unexpected_rows: unknown key '{sorted(item)[0]}'",
                                  location=where)
            if not description:
                description = " ".join(query.split())[:60]
            item = {"query": query}
        columns = item.get("column")
        expanded = ([{**item, "column": c} for c in columns] if isinstance(columns, list)
                    else [item])
        for kwargs in expanded:
            specs.append(ExpectationSpec(relation, kind, kwargs, severity, description, where,
                                         [str(r) for r in requires]))
    return specs


def default_specs(model: Model) -> list[ExpectationSpec]:
    """Project-wide defaults: the unique key is not null and unique."""
    key = list(model.config.unique_key)
    specs = [ExpectationSpec(model.name, "expect_column_values_to_not_be_null", {"column": c})
             for c in key]
    if len(key) == 1:
        specs.append(ExpectationSpec(model.name, "expect_column_values_to_be_unique",
                                     {"column": key[0]}))
    elif len(key) > 1:
        specs.append(ExpectationSpec(model.name, "expect_compound_columns_to_be_unique",
                                     {"column_list": key}))
    return specs
