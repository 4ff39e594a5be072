"""Render a model's Jinja, parse it with sqlglot in the source dialect, write it for a target."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
import sqlglot
from jinja2.bccache import Bucket, BytecodeCache, FileSystemBytecodeCache
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from sqlglot import exp
from sqlglot.errors import ParseError

from runner.config import Config
from runner.dialect import SOURCE_DIALECT, is_source, quoted
from runner.errors import CompileError, ConfigError
from runner.project import Graph, Model, load_models

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # gaps are handled by macros, not warnings


class SqlValue:
    """A var as it reaches SQL: always a literal, never raw text (no injection through vars)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        v = self.value
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, dt.datetime):
            return f"cast('{v.isoformat(sep=' ')}' as timestamp)"
        if isinstance(v, dt.date):
            return f"cast('{v.isoformat()}' as timestamp)"
        return exp.Literal.string(str(v)).sql(SOURCE_DIALECT)

    def __bool__(self) -> bool:
        return self.value is not None and self.value is not False

    def __eq__(self, other: object) -> bool:
        return self.value == (other.value if isinstance(other, SqlValue) else other)

    def __hash__(self) -> int:
        return hash(self.value)


@dataclass(frozen=True)
class TargetInfo:
    """What a template may know of the target: `target.name`, `target.dialect`, `target.schema`
    (a macro that differs per engine is written `<dialect>__name`: see `_dispatcher`)."""

    name: str
    dialect: str
    schema: str | None


@dataclass
class Increment:
    """An incremental model's state while it renders: `is_incremental()`, `watermark()` (the
    last load it processed) and `batch_load_id()` (the last load this build processes)."""

    active: bool = False
    watermark: int = 0
    batch: int = 0


@dataclass
class CompiledModel:
    model: Model
    sql: str  # in the target's dialect
    path: Path  # target/compiled/<dialect>/<model>.sql
    # a delete+insert increment: the SELECT of the keys whose rows it replaces
    touched_sql: str | None = None


_JINJA_OPTIONS: dict[str, Any] = {
    "undefined": jinja2.StrictUndefined, "keep_trailing_newline": True, "autoescape": False}


@functools.lru_cache(maxsize=1)
def _bytecode_cache() -> BytecodeCache | None:
    """Jinja's own cache of compiled templates, shared by every arpu process of this user: in
    a folder only they can write (Jinja checks its owner and mode), never in the project, so
    a cloned project cannot plant code. None where no such folder can be had."""
    try:
        return FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


@functools.lru_cache(maxsize=256)
def compiled(source: str) -> CodeType:
    """`source` compiled to Python by a sandboxed environment with arpu's options, once per
    process and, through Jinja's bytecode cache, once per user until it changes: a new `arpu`
    process compiled the macro files and every model again (about 0.15 s)."""
    env = SandboxedEnvironment(**_JINJA_OPTIONS)
    cache = _bytecode_cache()
    if cache is None:
        return env.compile(source)
    # the key names the source, the environment and its options; Jinja's header names its
    # own and Python's versions, and the checksum the source
    key = hashlib.sha256(f"{type(env).__name__}{sorted(map(str, _JINJA_OPTIONS.items()))}"
                         f"\0{source}".encode()).hexdigest()
    bucket = Bucket(env, key, key)
    try:
        cache.load_bytecode(bucket)
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError):  # unreadable
        bucket.reset()
    if bucket.code is None:
        bucket.code = env.compile(source)
        with contextlib.suppress(OSError):  # a full disk leaves it uncached
            cache.dump_bytecode(bucket)
    return bucket.code


def template(env: jinja2.Environment, source: str) -> jinja2.Template:
    """`env.from_string(source)`, compiled through `compiled`."""
    return env.template_class.from_code(env, compiled(source), env.make_globals(None))


DISPATCH_PREFIX = "default__"


@functools.lru_cache(maxsize=8)
def _macro_names(source: str) -> tuple[str, ...]:
    """The names of the macros the macro files define, in file order."""
    tree = SandboxedEnvironment(**_JINJA_OPTIONS).parse(source)
    return tuple(node.name for node in tree.find_all(jinja2.nodes.Macro))


def _dispatcher(name: str, env: jinja2.Environment, module: list[Any]) -> Any:
    """`name(...)` as dbt's `adapter.dispatch` resolves it: `<dialect>__name` when the macro
    files define one for the target's dialect, else `default__name`."""

    def dispatch(*args: Any, **kwargs: Any) -> Any:
        dialect = getattr(env.globals.get("target"), "dialect", None)
        macro = getattr(module[0], f"{dialect}__{name}", None) if dialect else None
        return (macro or getattr(module[0], DISPATCH_PREFIX + name))(*args, **kwargs)

    dispatch.__name__ = name
    return dispatch


def macro_environment(macros_dir: Path, **functions: Any) -> jinja2.Environment:
    """A Jinja environment with `functions` and every macro of `macros_dir` as globals. All
    macro files form one module, so macros may call each other across files. Sandboxed, as
    dbt's is: a model or expectation file may call what it is given, never reach Python's
    internals (`''.__class__.__mro__`), so `arpu ls` on a cloned project runs no code.

    A macro that differs per engine is a family, `default__x` and `<dialect>__x` (for example
    `postgres__x`), called as `x(...)`: the target's dialect (`target.dialect`) picks its own
    macro, else the default, as dbt's `adapter.dispatch` does. Models and macros call `x` and
    never ask which engine they run on."""
    env = SandboxedEnvironment(**_JINJA_OPTIONS)
    env.globals.update(functions)
    files = sorted(macros_dir.glob("**/*.sql")) if macros_dir.exists() else []
    texts = [path.read_text() for path in files]
    source = "\n".join(texts)
    module: list[Any] = []  # filled below; dispatchers resolve their macros when called
    try:
        code = compiled(source)  # the validator binds the same code to its own environment
        names = _macro_names(source)
    except jinja2.TemplateSyntaxError:
        for path, text in zip(files, texts, strict=True):  # which file, which line
            try:
                env.parse(text)
            except jinja2.TemplateSyntaxError as exc:
                raise CompileError(exc.message or "bad macro", path=path,
                                   line=exc.lineno) from None
        raise
    for name in names:
        if name.startswith(DISPATCH_PREFIX):
            family = name[len(DISPATCH_PREFIX):]
            if family in names:
                raise CompileError(
                    f"macro '{family}' is defined and also dispatched by '{name}': keep "
                    f"'{name}' and '<dialect>__{family}', call '{family}(...)'",
                    path=_defining_file(files, texts, family) or macros_dir)
            # before the module exists: its macros resolve names from the globals of then
            env.globals[family] = _dispatcher(family, env, module)
    module.append(env.template_class.from_code(env, code, env.make_globals(None)).module)
    for name in dir(module[0]):
        if not name.startswith("_"):
            env.globals[name] = getattr(module[0], name)
    return env


def _defining_file(files: list[Path], texts: list[str], macro: str) -> Path | None:
    for path, text in zip(files, texts, strict=True):
        if macro in _macro_names(text):
            return path
    return None


class Compiler:
    def __init__(self, project_dir: Path, config: Config, target_name: str) -> None:
        self.project_dir = project_dir
        self.config = config
        if target_name not in config.targets:
            raise ConfigError(
                f"unknown target '{target_name}' (defined: {', '.join(config.targets)})",
                location="--target",
            )
        self._target = config.targets[target_name]
        self.published_schema = self._target.published_schema()
        # where a build writes: beside the published relations when they are swapped in
        self.target = TargetInfo(target_name, self._target.dialect, self._target.work_schema())
        self.models = load_models(project_dir / config.models_path)
        self._capture: tuple[list[str], list[tuple[str, str]]] | None = None
        # what the model being rendered may know of its incremental state
        self._increment = Increment()
        self._templates: dict[str, jinja2.Template] = {}
        self.env = self._environment()
        for model in self.models.values():
            self._capture_dependencies(model)
        self.graph = Graph(self.models)

    # -- Jinja -------------------------------------------------------------------------------
    def _environment(self) -> jinja2.Environment:
        return macro_environment(
            self.project_dir / self.config.macros_path,
            var=self._var, target=self.target, ref=self._ref, source=self._source,
            source_format=self.config.source.format,
            is_incremental=lambda: self._increment.active,
            watermark=lambda: self._increment.watermark,
            batch_load_id=lambda: self._increment.batch,
        )

    def _var(self, name: str) -> SqlValue:
        values = self.config.vars.model_dump()
        if name not in values:
            raise ConfigError(f"var '{name}' is not defined (see vars in arpu.yml)")
        return SqlValue(values[name])

    def relation(self, name: str) -> str:
        """Where the build writes `name` (in the models' dialect)."""
        return self._target.relation(name)

    def published_relation(self, name: str) -> str:
        """Where readers find `name` once published."""
        return self._target.relation(name, published=True)

    def _ref(self, name: str) -> str:
        if self._capture is not None:
            self._capture[0].append(name)
        return self.relation(name)

    def _source(self, source_name: str, table: str) -> str:
        if self._capture is not None:
            self._capture[1].append((source_name, table))
        schema = self.config.source.schema_
        if self.config.source.format == "segment_warehouse" and schema:
            return f"{quoted(schema)}.{quoted(table)}"
        return self.relation(table)

    def _capture_dependencies(self, model: Model) -> None:
        self._capture = ([], [])
        try:
            self.render(model)
            if model.config.touched_keys:
                self.render(model, text=model.config.touched_keys)
            model.depends_on = sorted(set(self._capture[0]))
            model.sources = sorted(set(self._capture[1]))
        finally:
            self._capture = None

    def render(self, model: Model, increment: Increment | None = None,
               text: str | None = None) -> str:
        """The model's SQL, or `text` (its header's touched_keys) rendered as the model."""
        self._increment = increment or Increment()
        key = model.name if text is None else f"{model.name}#touched"
        try:
            if key not in self._templates:
                self._templates[key] = template(
                    self.env, model.template if text is None else text)
            return self._templates[key].render(this=self.relation(model.name))
        except jinja2.TemplateSyntaxError as exc:
            raise CompileError(exc.message or "template syntax error", path=model.path,
                               line=exc.lineno) from None
        except jinja2.UndefinedError as exc:
            raise CompileError(str(exc), path=model.path) from None
        except SecurityError as exc:
            raise CompileError(f"not allowed in a template: {exc}", path=model.path) from None

    # -- SQL ---------------------------------------------------------------------------------
    def parse(self, model: Model, sql: str) -> exp.Query:
        try:
            statements = [s for s in sqlglot.parse(sql, read=SOURCE_DIALECT) if s is not None]
        except ParseError as exc:
            err = exc.errors[0] if exc.errors else {}
            line, col = err.get("line"), err.get("col")
            if col and err.get("highlight"):  # sqlglot points at the token's end
                col = max(col - len(err["highlight"]) + 1, 1)
            snippet = _snippet(sql, line, col)
            raise CompileError(
                f"syntax error: {err.get('description', exc)} near "
                f"'{(err.get('highlight') or '').strip()}'\n{snippet}",
                path=model.path, line=line, column=col, snippet=snippet,
            ) from None
        if len(statements) != 1 or not isinstance(statements[0], exp.Query):
            raise CompileError("a model must be exactly one SELECT statement", path=model.path)
        _check_portable(model, sql, statements[0])
        return statements[0]

    def compile(self, model: Model, out_dir: Path | None = None,
                increment: Increment | None = None) -> CompiledModel:
        """The model's SELECT for the target; with an active `increment`, the select of the
        rows that change since the model's watermark (written to `<model>.incremental.sql`)."""
        sql = self._for_target(model, self.render(model, increment))
        touched = None
        active = increment is not None and increment.active
        if active and model.config.incremental_strategy == "delete+insert":
            touched = self._for_target(
                model, self.render(model, increment, text=model.config.touched_keys))
        out_dir = out_dir or self.project_dir / "target" / "compiled" / self.target.dialect
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{model.name}{'.incremental.sql' if active else '.sql'}"
        header = f"-- {model.name}: compiled for {self.target.dialect} from {model.path.name}"
        path.write_text(f"{header}\n{sql}\n")
        if touched is not None:  # a file of its own: each compiled file is one statement
            (out_dir / f"{model.name}.touched.sql").write_text(
                f"-- {model.name}: the keys whose rows its increment replaces\n{touched}\n")
        return CompiledModel(model, sql, path, touched)

    def _for_target(self, model: Model, rendered: str) -> str:
        key = (rendered, self.target.dialect)
        sql = _TRANSLATED.get(key)
        if sql is None:
            tree = self.parse(model, rendered)
            if is_source(self.target.dialect):  # checked by the parse, nothing to translate
                sql = rendered.strip().rstrip(";").rstrip()
            else:
                sql = tree.sql(dialect=self.target.dialect, pretty=True)
            if len(_TRANSLATED) >= 1024:
                _TRANSLATED.clear()
            _TRANSLATED[key] = sql
        return sql


# A rendered model checked and translated, by (text, dialect): a process that compiles the
# same text again (a build after `arpu query`'s, a test session's many projects) parses it
# once. Errors are not kept: they name the model's file.
_TRANSLATED: dict[tuple[str, str], str] = {}


def _check_portable(model: Model, sql: str, tree: exp.Query) -> None:
    """Refuse what sqlglot passes through unchanged but engines read differently: GROUP BY ALL
    (PostgreSQL and Trino take ALL as a set quantifier), FILTER on window functions and RANGE
    frames (missing or different on several engines)."""
    problems: list[tuple[str, exp.Expression]] = []
    for group in tree.find_all(exp.Group):
        if group.args.get("all"):
            problems.append(("GROUP BY ALL is not portable: name the columns", group))
    for window in tree.find_all(exp.Window):
        if window.find(exp.Filter):
            problems.append(("FILTER in a window function is not portable: use CASE", window))
        spec = window.args.get("spec")
        if spec is not None and str(spec.args.get("kind", "")).upper() == "RANGE":
            problems.append(("RANGE frames are not portable: use ROWS", window))
    if problems:
        message, node = problems[0]
        text = node.sql(SOURCE_DIALECT)[:40]
        line = next((i for i, ln in enumerate(sql.splitlines(), 1)
                     if text.split()[0].lower() in ln.lower()), None)
        raise CompileError(message, path=model.path, line=line)


def _snippet(sql: str, line: int | None, col: int | None) -> str:
    if not line:
        return ""
    lines = sql.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    text = lines[line - 1]
    caret = " " * max((col or 1) - 1, 0) + "^"
    return f"  {line} | {text}\n    | {caret}"
