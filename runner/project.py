"""Loading models: header config, the DAG from ref(), and dbt-style selectors."""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.errors import CompileError, ConfigError

HEADER = re.compile(r"\A\s*/\*(.*?)\*/", re.DOTALL)
DEFAULT_MATERIALIZATION = {"staging": "table", "intermediate": "table", "marts": "table"}


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    materialized: Literal["view", "table", "incremental"] | None = None
    unique_key: list[str] = Field(default_factory=list)  # incremental models merge by it
    tags: list[str] = Field(default_factory=list)
    expectations: list[dict[str, Any]] = Field(default_factory=list)


@dataclass
class Model:
    name: str
    path: Path
    template: str
    config: ModelConfig
    layer: str
    depends_on: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)

    @property
    def materialized(self) -> str:
        return self.config.materialized or DEFAULT_MATERIALIZATION.get(self.layer, "table")


def parse_header(path: Path, text: str) -> ModelConfig:
    """The leading `/* ... */` block is YAML: a description and the model's config."""
    match = HEADER.match(text)
    if not match:
        return ModelConfig()
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"model header is not valid YAML: {getattr(exc, 'problem', exc)}",
            location=f"{path}:{mark.line + 1}" if mark else str(path),
        ) from None
    if isinstance(data, str):
        data = {"description": data}
    if isinstance(data.get("unique_key"), str):
        data["unique_key"] = [data["unique_key"]]
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"model header: {key}: {msg}", location=str(path)) from None


def load_models(models_dir: Path) -> dict[str, Model]:
    models: dict[str, Model] = {}
    for path in sorted(models_dir.rglob("*.sql")):
        name = path.stem
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ConfigError("a model's file name must be a plain identifier (letters, digits, "
                              "underscores), as it names the relation", location=str(path))
        if name in models:
            raise ConfigError(
                f"two models named '{name}': {models[name].path} and {path}", location=str(path)
            )
        text = path.read_text()
        rel = path.relative_to(models_dir)
        layer = rel.parts[0] if len(rel.parts) > 1 else ""
        models[name] = Model(name, path, text, parse_header(path, text), layer)
    return models


class Graph:
    """The DAG of models; edges come from ref() calls captured while rendering."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models
        for model in models.values():
            for dep in model.depends_on:
                if dep not in models:
                    raise CompileError(
                        f"model '{model.name}' refs '{dep}', which is not a model",
                        path=model.path,
                    )
        sorter = graphlib.TopologicalSorter({m.name: m.depends_on for m in models.values()})
        try:
            self.order = list(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            raise ConfigError(
                "models form a cycle: " + " -> ".join(cycle), location=str(models[cycle[0]].path)
            ) from None
        self.children: dict[str, set[str]] = {name: set() for name in models}
        for model in models.values():
            for dep in model.depends_on:
                self.children[dep].add(model.name)

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.models[name].depends_on)
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.models[node].depends_on)
        return seen

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.children[name])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.children[node])
        return seen

    def select(self, selectors: list[str] | None) -> list[str]:
        """dbt-style: `m`, `m+`, `+m`, `+m+`, `tag:x`, `path:models/marts`; union of all."""
        if not selectors:
            return list(self.order)
        chosen: set[str] = set()
        for raw in selectors:
            for sel in re.split(r"[\s,]+", raw.strip()):
                if sel:
                    chosen |= self._select_one(sel)
        return [name for name in self.order if name in chosen]

    def _select_one(self, sel: str) -> set[str]:
        up, down = sel.startswith("+"), sel.endswith("+")
        core = sel.strip("+")
        if core.startswith("tag:"):
            base = {m.name for m in self.models.values() if core[4:] in m.config.tags}
        elif core.startswith("path:"):
            prefix = core[5:].rstrip("/")
            base = {m.name for m in self.models.values() if str(m.path).find(prefix) >= 0}
        elif core in self.models:
            base = {core}
        else:
            raise ConfigError(f"'{sel}' matches no model", location="--select")
        if not base:
            raise ConfigError(f"'{sel}' matches no model", location="--select")
        result = set(base)
        for name in base:
            if up:
                result |= self.ancestors(name)
            if down:
                result |= self.descendants(name)
        return result
