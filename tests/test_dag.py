"""The folders follow the DAG: staging reads only sources, intermediate reads staging and
intermediate, marts read any layer; and a model's name says its folder (stg_ in staging/, int_ in
intermediate/, derived_ in marts/derived/: what marts share that is itself built from marts)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from runner.context import Context
from runner.project import Model

ROOT = Path(__file__).resolve().parents[1]
MAY_REF = {"staging": set(), "intermediate": {"staging", "intermediate"},
           "marts": {"staging", "intermediate", "marts"}}
PREFIXES = {("staging",): "stg_", ("intermediate",): "int_", ("marts", "derived"): "derived_"}
REF = re.compile(r"""\bref\(\s*['"](\w+)['"]\s*\)""")


def refs(model: Model) -> set[str]:
    """The refs its rendering captured (macros included) and every ref() written in its file
    (a branch the default vars do not take included)."""
    return set(model.depends_on) | set(REF.findall(model.template))


def violations(project: Path) -> list[str]:
    """Each model that reads against the flow or whose name and folder disagree, in one line."""
    models = Context(project).compiler().models
    found = []
    for name, model in sorted(models.items()):
        if model.layer not in MAY_REF:
            found.append(f"{name}: not under models/staging, intermediate or marts")
            continue
        for dep in sorted(refs(model) & set(models)):
            if models[dep].layer not in MAY_REF[model.layer]:
                found.append(f"{name} ({model.layer}) refs {dep} ({models[dep].layer})")
        if model.layer == "staging" and not model.sources:
            found.append(f"{name} (staging) reads no source")
        for folders, prefix in PREFIXES.items():
            if (model.folders == folders) != name.startswith(prefix):
                found.append(f"{name} ({'/'.join(model.folders)}): a {prefix}* model is in "
                             f"models/{'/'.join(folders)}/ and nothing else is")
    return found


def test_the_project_flows_from_staging_to_intermediate_to_marts() -> None:
    assert violations(ROOT) == []


def test_a_model_reading_against_the_flow_is_named(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for folder in ("models", "macros"):
        shutil.copytree(ROOT / folder, project / folder)
    shutil.copy(ROOT / "arpu.yml", project / "arpu.yml")
    models = project / "models"
    (models / "intermediate" / "int_late.sql").write_text(
        "{% if var('promo_start') %}select * from {{ ref('fct_orders') }}"
        "{% else %}select 1 as x{% endif %}\n")
    (models / "staging" / "stg_late.sql").write_text("select * from {{ ref('int_orders') }}\n")
    (models / "marts" / "int_misplaced.sql").write_text("select * from {{ ref('int_orders') }}\n")
    assert violations(project) == [
        "int_late (intermediate) refs fct_orders (marts)",
        "int_misplaced (marts): a int_* model is in models/intermediate/ and nothing else is",
        "stg_late (staging) refs int_orders (intermediate)",
        "stg_late (staging) reads no source",
    ]
