"""`arpu init`: a new project a user can start from, built on the shipped models.

What it writes: `arpu.yml` (a DuckDB target, commented examples of the others, every var with
its default), the shipped `models/`, `macros/` and `metrics/`, the bundled sample in `seeds/`
(so `arpu build` shows real numbers right away, as on the repository itself) and a
`.gitignore` for what builds write. Where those files come from: `runner/starter/` when the
package carries them as package data (a wheel built that way), else the source checkout the
package sits in (a clone or an editable install: `pip install -e .`). Nothing is overwritten:
an existing `arpu.yml`, `models/`, `macros/`, `metrics/` or `seeds/` stops it (exit 2); an
existing `.gitignore` gets the lines it lacks."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runner.config import CONFIG_FILE, Vars
from runner.errors import UsageError

FOLDERS = ("models", "macros", "metrics", "seeds")
GITIGNORE = ["target/", "*.duckdb", "*.duckdb.*", "spark-warehouse/", "metastore_db/",
             "derby.log", ".env"]

CONFIG_HEAD = """\
# arpu project. Every key is documented in arpu's runner/config.py.
# Any value may read the environment, as in dbt: "{{ env_var('NAME', 'default') }}" (quoted);
# secrets belong in the environment, never in this file.
target: duckdb                # the default target; another one with --target NAME

targets:
  duckdb:
    type: duckdb
    path: arpu.duckdb         # what BI tools read; arpu works in arpu.work.duckdb beside it
  # postgres:
  #   type: postgres
  #   host: "{{ env_var('ARPU_PG_HOST', '127.0.0.1') }}"
  #   port: "{{ env_var('ARPU_PG_PORT', '5432') }}"
  #   database: analytics
  #   user: "{{ env_var('ARPU_PG_USER', 'postgres') }}"
  #   password_env: ARPU_PG_PASSWORD   # the name of the variable holding the password
  #   schema: arpu
  # spark:
  #   type: spark
  #   master: local[*]          # or spark://host:7077, sc://host
  #   database: arpu
  # snowflake: {type: snowflake}   # compile-only: arpu compile --target snowflake

source:
  format: messages            # Segment messages loaded with `arpu ingest PATH...`; or
                              # segment_warehouse with schema: <Segment's warehouse schema>
  # max_message_bytes: 1048576  # a longer line is rejected (with its reason), read no further
  # max_products: 10000         # an order with more products is rejected

# The bundled sample, loaded by the first `arpu build` while nothing is ingested.
seed_path: seeds/sample_events.ndjson.gz

# Vars of the models, with their defaults; one run: arpu build --vars '{"start_date": "..."}'
vars:
"""


@dataclass
class InitResult:
    path: Path
    written: list[str] = field(default_factory=list)
    models: int = 0
    source: Path | None = None  # where the models came from; None: not found


def starter_dir() -> Path | None:
    """The folder holding the shipped models, macros and sample, or None."""
    import runner

    package = Path(runner.__file__).resolve().parent
    for candidate in (package / "starter", package.parent):
        if (candidate / "models" / "staging" / "stg_events.sql").is_file() and \
                (candidate / "macros").is_dir():
            return candidate
    return None


def config_text() -> str:
    """arpu.yml for a new project: the head above, then every var with its default."""
    lines = [CONFIG_HEAD.rstrip("\n")]
    for name, info in Vars.model_fields.items():
        default = info.get_default(call_default_factory=True)
        value = json.dumps(default, default=str)  # JSON scalars are YAML
        comment = f"  # {info.description}" if info.description else ""
        lines.append(f"  {name}: {value}{comment}")
    return "\n".join(lines) + "\n"


def init_project(path: Path) -> InitResult:
    """Write a new project into `path` (created if missing); see the module's docstring."""
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UsageError("not a folder", location=str(path))
    for name in (CONFIG_FILE, *FOLDERS):
        if (path / name).exists():
            what = "a project is already there" if name == CONFIG_FILE else \
                "arpu init never overwrites it"
            raise UsageError(f"{path / name} exists: {what}")
    result = InitResult(path, source=starter_dir())
    path.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".arpu-init-", dir=path))
    try:
        for folder in FOLDERS:
            origin = result.source / folder if result.source else None
            if origin is not None and origin.is_dir():
                files = [origin / "sample_events.ndjson.gz", origin / "README.md"] \
                    if folder == "seeds" else None
                _copy(origin, staging / folder, files)
            else:
                (staging / folder).mkdir()
                (staging / folder / ".gitkeep").touch()
        (staging / CONFIG_FILE).write_text(config_text())
        result.models = len(list((staging / "models").rglob("*.sql")))
        for name in (*FOLDERS, CONFIG_FILE):  # arpu.yml last: it makes the folder a project
            os.replace(staging / name, path / name)
            result.written.append(name + ("/" if name in FOLDERS else ""))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _extend_gitignore(path / ".gitignore")
    result.written.append(".gitignore")
    return result


def _copy(origin: Path, destination: Path, files: list[Path] | None) -> None:
    if files is None:
        shutil.copytree(origin, destination,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        return
    destination.mkdir()
    for file in files:
        if file.is_file():
            shutil.copy2(file, destination / file.name)


def _extend_gitignore(path: Path) -> None:
    existing = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in GITIGNORE if line not in existing]
    if not missing:
        return
    head = "\n" if existing and existing[-1].strip() else ""
    with path.open("a") as handle:
        handle.write(head + "# arpu: what builds write\n" + "\n".join(missing) + "\n")
