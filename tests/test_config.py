"""arpu.yml loading: defaults, typed errors that name the file, line and key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from runner.config import find_project, load_config, parse_vars_option
from runner.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_defines_every_target() -> None:
    config = load_config(ROOT)
    assert config.target == "duckdb"
    assert set(config.targets) >= {"duckdb", "postgres", "spark", "snowflake", "bigquery",
                                   "redshift", "trino"}
    assert config.vars.conversion_window_days == 7
    assert config.vars.experiment_window_days == 30
    assert config.vars.funnel_reentry is False


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.targets["duckdb"].path == "arpu.duckdb"  # type: ignore[union-attr]


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("target: duckdb\nvars:\n  conversion_window_dayz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path / 'arpu.yml'}:3: vars.conversion_window_dayz: unknown key"
    assert info.value.exit_code == 2


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("vars:\n  conversion_window_days: soon\n")
    with pytest.raises(ConfigError, match=r"arpu.yml:2: vars.conversion_window_days: Input should"):
        load_config(tmp_path)


def test_unknown_default_target(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("target: oracle\n")
    with pytest.raises(ConfigError, match="'oracle' is not defined"):
        load_config(tmp_path)


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("vars:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"arpu.yml:\d+: not valid YAML"):
        load_config(tmp_path)


def test_vars_override_is_typed() -> None:
    config = load_config(ROOT, {"conversion_window_days": 3, "start_date": "2026-03-01"})
    assert config.vars.conversion_window_days == 3
    assert config.vars.start_date == dt.date(2026, 3, 1)
    with pytest.raises(ConfigError, match="--vars: conversion_window_days"):
        load_config(ROOT, {"conversion_window_days": "many"})
    with pytest.raises(ConfigError, match=r"--vars: unknown var 'nonsense' \(known: start_date"):
        load_config(ROOT, {"nonsense": 1})


def test_vars_option_accepts_json_and_yaml() -> None:
    assert parse_vars_option('{"conversion_window_days": 7}') == {"conversion_window_days": 7}
    assert parse_vars_option("{funnel_reentry: true}") == {"funnel_reentry": True}
    with pytest.raises(ConfigError, match="--vars"):
        parse_vars_option("[1, 2]")


def test_find_project_looks_in_the_folder_and_its_parents(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("target: duckdb\n")
    (tmp_path / "models" / "marts").mkdir(parents=True)
    assert find_project(tmp_path / "models" / "marts") == tmp_path.resolve()
    with pytest.raises(UsageError, match="no such folder"):
        find_project(tmp_path / "missing")


def test_env_var_renders_values_once_in_a_sandbox(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "arpu.yml").write_text(
        "target: pg\ntargets:\n  pg:\n    type: postgres\n"
        "    host: \"{{ env_var('ARPU_TEST_HOST') }}\"\n"
        "vars:\n  conversion_window_days: &days \"{{ env_var('ARPU_TEST_WINDOW', 7) }}\"\n"
        "  experiment_window_days: *days\n")
    monkeypatch.setenv("ARPU_TEST_HOST", "{{ env_var('NOT_RENDERED_AGAIN') }}")
    monkeypatch.setenv("ARPU_TEST_WINDOW", "3")
    config = load_config(tmp_path)
    assert config.targets["pg"].host == "{{ env_var('NOT_RENDERED_AGAIN') }}"  # type: ignore
    assert config.vars.conversion_window_days == config.vars.experiment_window_days == 3
    monkeypatch.delenv("ARPU_TEST_HOST")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'arpu.yml'}:5: env_var('ARPU_TEST_HOST')")
    assert info.value.exit_code == 2
