"""Regenerate the golden compiled SQL of every model for the compile-only dialects and ClickHouse
(whose SQL is the furthest from the models' DuckDB).

    python tests/golden/regen.py

Review the diff (`git diff tests/golden`) before committing: it is the SQL users will run.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent
DIALECTS = ("snowflake", "bigquery", "redshift", "trino", "clickhouse")


def compile_all(dialect: str, out: Path) -> dict[str, str]:
    """Compiled SQL per model, from a copy of the project (nothing written into it)."""
    sys.path.insert(0, str(ROOT))
    from runner.context import Context

    project = out / "project"
    if not project.exists():
        for folder in ("models", "macros"):
            shutil.copytree(ROOT / folder, project / folder)
        shutil.copy(ROOT / "arpu.yml", project / "arpu.yml")
    compiled = Context(project).compile(dialect)
    return {c.model.name: c.path.read_text() for c in compiled}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in DIALECTS:
            target = GOLDEN / dialect
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for name, sql in compile_all(dialect, Path(tmp)).items():
                (target / f"{name}.sql").write_text(sql)
            print(f"{dialect}: {len(list(target.glob('*.sql')))} models")


if __name__ == "__main__":
    main()
