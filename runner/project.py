"""Loading models: header config, the DAG from ref(), and dbt-style selectors."""

from __future__ import annotations

import graphlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.config import FAST_YAML
from runner.errors import CompileError, ConfigError

HEADER = re.compile(r"\A\s*/\*(.*?)\*/", re.DOTALL)
# dbt's node selector: [@][n+]method:value[+n]; the method is optional (dbt's default method)
SELECTOR = re.compile(r"\A(?P<at>@)?(?:(?P<up_depth>\d*)(?P<up>\+))?"
                      r"(?:(?P<method>[A-Za-z_][\w.]*):)?(?P<value>.*?)"
                      r"(?:(?P<down>\+)(?P<down_depth>\d*))?\Z")
METHODS = ("fqn", "tag", "path", "file")
# dbt's other methods, refused by name (their resources, state or results do not exist here)
DBT_METHODS = ("config", "source", "state", "result", "resource_type", "test_name", "test_type",
               "exposure", "metric", "package", "group", "access", "version", "source_status",
               "semantic_model", "saved_query", "unit_test", "wildcard")
WILDCARDS = frozenset("*?[]")
DEFAULT_MATERIALIZATION = {"staging": "table", "intermediate": "table", "marts": "table"}


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    materialized: Literal["view", "table", "incremental"] | None = None
    unique_key: list[str] = Field(default_factory=list)  # incremental models merge by it
    # how an incremental model's new rows replace the old ones: `merge` by unique_key, or
    # `delete+insert`: the rows whose `touched_by` columns (default: unique_key) are among
    # `touched_keys` (a SELECT of those columns, Jinja like the model) are deleted, then the
    # model's incremental SELECT, which returns every row of those keys, is inserted. A key
    # that lost all its rows is only deleted, which a merge by key cannot do.
    incremental_strategy: Literal["merge", "delete+insert"] = "merge"
    touched_keys: str = ""
    touched_by: list[str] = Field(default_factory=list)
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
    folders: tuple[str, ...] = ()  # under the models folder: ("marts",) for marts/x.sql

    @property
    def materialized(self) -> str:
        return self.config.materialized or DEFAULT_MATERIALIZATION.get(self.layer, "table")


def parse_header(path: Path, text: str) -> ModelConfig:
    """The leading `/* ... */` block is YAML: a description and the model's config."""
    match = HEADER.match(text)
    if not match:
        return ModelConfig()
    try:
        data = yaml.load(match.group(1), Loader=FAST_YAML) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"model header is not valid YAML: {getattr(exc, 'problem', exc)}",
            location=f"{path}:{mark.line + 1}" if mark else str(path),
        ) from None
    if isinstance(data, str):
        data = {"description": data}
    for key in ("unique_key", "touched_by"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"model header: {key}: {msg}", location=str(path)) from None
    if config.incremental_strategy == "delete+insert" and not (
            config.touched_keys.strip() and (config.touched_by or config.unique_key)):
        raise ConfigError("model header: incremental_strategy delete+insert needs touched_keys "
                          "and unique_key (or touched_by)", location=str(path))
    return config


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
        models[name] = Model(name, path, text, parse_header(path, text), layer,
                             folders=rel.parts[:-1])
    return models


class Graph:
    """The DAG of models; edges come from ref() calls captured while rendering."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models
        # the project folder `path:` selectors start from: the Context sets it; by default the
        # folder above the models folder (`models_path: models`)
        self.root: Path | None = next(
            (m.path.parents[len(m.folders) + 1] for m in models.values()), None)
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

    def ancestors(self, name: str, depth: int | None = None) -> set[str]:
        """Models `name` reads from, directly or not; `depth` 1 is its parents only."""
        return self._walk(name, lambda n: self.models[n].depends_on, depth)

    def descendants(self, name: str, depth: int | None = None) -> set[str]:
        """Models that read from `name`, directly or not; `depth` 1 is its children only."""
        return self._walk(name, lambda n: self.children[n], depth)

    @staticmethod
    def _walk(name: str, edges: Callable[[str], Iterable[str]], depth: int | None) -> set[str]:
        seen: set[str] = set()
        frontier, step = {name}, 0
        while frontier and (depth is None or step < depth):
            frontier = {m for n in frontier for m in edges(n)} - seen
            seen |= frontier
            step += 1
        seen.discard(name)
        return seen

    # -- dbt's selector syntax ---------------------------------------------------------------
    def select(self, select: list[str] | None, exclude: list[str] | None = None) -> list[str]:
        """The models `--select` and `--exclude` name, in dependency order, with dbt's grammar
        and meaning: arguments separated by spaces (or given one per flag) are a union, parts
        joined by a comma an intersection, and `--exclude` is taken away from the result.
        A part is `[@][n+]method:value[+n]` with the methods `fqn` (the default: a model name,
        a folder, `folder.model`, wildcards), `tag`, `path` (relative to the project folder;
        the default when the value has a `/`) and `file`; `+` adds ancestors (before) or
        descendants (after), `n` limits the depth, `@` adds the descendants' ancestors.
        Anything else is refused with exit 2, never read another way."""
        chosen = self._union(select, "--select") if select else set(self.order)
        if exclude:
            chosen -= self._union(exclude, "--exclude")
            if not chosen:
                raise ConfigError("every selected model is excluded", location="--exclude")
        return [name for name in self.order if name in chosen]

    def _union(self, arguments: list[str], flag: str) -> set[str]:
        tokens = [token for argument in arguments for token in argument.split()]
        if not tokens:
            raise ConfigError("an empty selector selects nothing: name a model, tag:x or "
                              "path:models/...", location=flag)
        chosen: set[str] = set()
        for token in tokens:
            parts = token.split(",")
            if not all(parts):
                raise ConfigError(f"'{token}': an empty part around a comma", location=flag)
            found = set.intersection(*(self._select_one(part, flag) for part in parts))
            if not found:
                raise ConfigError(f"'{token}' matches no model (no model is in every part of "
                                  "the intersection)", location=flag)
            chosen |= found
        return chosen

    def _select_one(self, spec: str, flag: str) -> set[str]:
        match = SELECTOR.match(spec)
        if match is None or not match["value"]:
            raise ConfigError(f"'{spec}' is not a selector", location=flag)
        if match["at"] and match["down"]:
            raise ConfigError(f"'{spec}': dbt's '@' prefix and a '+' suffix cannot be combined",
                              location=flag)
        method, value = match["method"], match["value"]
        if method is None:  # dbt's default: a path if it has a separator, a file, else fqn
            method = ("path" if "/" in value or "\\" in value else
                      "file" if value.lower().endswith(".sql") else "fqn")
        if method not in METHODS:
            base = method.split(".")[0]
            what = ("dbt's selector method" if base in DBT_METHODS else "a selector method")
            raise ConfigError(
                f"'{spec}': {what} '{method}:' is not supported; arpu selects by model name or "
                "fqn:, tag:, path:, file:, with +, n+, +n, @, a,b and spaces", location=flag)
        if method == "path":
            files = self._paths(value, spec, flag)
            base = {name for name, model in self.models.items() if model.path in files}
        else:
            base = {name for name in self.models if self._matches(method, value, name)}
        if not base:
            hint = (" (as in dbt, a wildcard matches the dotted name folder.model, as in "
                    f"'*.{value}' or 'staging.*')"
                    if method == "fqn" and WILDCARDS & set(value) else "")
            raise ConfigError(f"'{spec}' matches no model{hint}", location=flag)
        up = int(match["up_depth"]) if match["up_depth"] else None
        down = int(match["down_depth"]) if match["down_depth"] else None
        result = set(base)
        for name in base:
            if match["at"]:
                family = {name} | self.descendants(name)
                result |= family
                for member in family:
                    result |= self.ancestors(member)
            if match["up"]:
                result |= self.ancestors(name, up)
            if match["down"]:
                result |= self.descendants(name, down)
        return result

    def _matches(self, method: str, value: str, name: str) -> bool:
        model = self.models[name]
        if method == "tag":
            return any(fnmatchcase(tag, value) for tag in model.config.tags)
        if method == "file":
            return fnmatchcase(model.path.name, value) or fnmatchcase(model.path.stem, value)
        return _fqn_matches(self.fqn(name), value)

    def fqn(self, name: str) -> list[str]:
        """dbt's fully qualified name without the project: the folders under models/, then
        the model (`models/marts/fct_orders.sql` is `marts.fct_orders`)."""
        model = self.models[name]
        return [*model.folders, name]

    def _paths(self, value: str, spec: str, flag: str) -> set[Path]:
        """Model files under what `value` names, a path or glob relative to the project."""
        if self.root is None:  # no models
            return set()
        pattern = PurePosixPath(value.replace("\\", "/"))
        if pattern.is_absolute() or ".." in pattern.parts or not pattern.parts:
            raise ConfigError(f"'{spec}': a path relative to the project folder, such as "
                              "path:models/marts", location=flag)
        if pattern.parts[0] == ".":
            pattern = PurePosixPath(*pattern.parts[1:])
        matched = set(self.root.glob(str(pattern)))
        return {m.path for m in self.models.values()
                if m.path in matched or any(parent in matched for parent in m.path.parents)}


def _fqn_matches(fqn: list[str], selector: str) -> bool:
    """dbt's rule: the model's name, or a dotted prefix of its fqn (`marts` is every model
    under models/marts); from the first part with a wildcard on, the rest is matched as one
    glob (`*` crosses dots)."""
    if fqn[-1] == selector:
        return True
    parts = selector.split(".")
    if len(parts) > len(fqn):
        return False
    for i, part in enumerate(parts):
        if WILDCARDS & set(part):
            return fnmatchcase(".".join(fqn[i:]), ".".join(parts[i:]))
        if fqn[i] != part:
            return False
    return True
