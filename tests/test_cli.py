"""The command line as a user drives it: exit codes, one-line errors, fast help, exports."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.built import Built
from support.project import ProjectHarness
from support.project import run_arpu as arpu


@pytest.fixture(scope="module")
def built(sample_built_by_cli: Built, tmp_path_factory: pytest.TempPathFactory
          ) -> ProjectHarness:
    """A fresh project after `arpu build` (built once per session; this module's copy)."""
    returncode, stdout, stderr = sample_built_by_cli.outcome
    assert returncode == 0, stdout + stderr
    assert "Fresh project: loaded the bundled sample" in stdout
    assert "duplicates removed" in " ".join(stdout.split())
    return sample_built_by_cli.copy(tmp_path_factory.mktemp("cli") / "project")


def test_help_imports_no_heavy_module() -> None:
    code = ("import sys, runner.cli; heavy = [m for m in ('duckdb', 'sqlglot', 'pandas', "
            "'great_expectations', 'pyspark', 'psycopg') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "--help"], capture_output=True,
                          text=True, check=True)
    for command in ("build", "run", "test", "compile", "ingest", "seed", "ls", "show", "cohort"):
        assert command in proc.stdout


def test_ctrl_c_while_an_extension_module_initializes_waits_for_it() -> None:
    """SIGINT while an extension module initializes (its loader's create_module running
    Python, as nanobind's enums do) is held until the module is ready (interrupted there,
    DuckDB's aborted the process: exit -6); the command is interrupted right after. An import
    of plain Python stays interruptible. In a process of its own, with arpu's handler."""
    code = """
import os, signal, sys, time
from importlib.machinery import ExtensionFileLoader, ModuleSpec
from runner import cli

class Slow(ExtensionFileLoader):  # an extension whose initialization takes 0.3 s
    def create_module(self, spec):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        print("initialized", flush=True)
        return None
    def exec_module(self, module):
        pass

class Finder:
    def find_spec(self, name, path=None, target=None):
        return ModuleSpec(name, Slow(name, "slow.so")) if name == "slow_extension" else None

sys.meta_path.insert(0, Finder())
signal.signal(signal.SIGINT, cli._on_sigint)
for name in ("slow_extension", "plain"):
    try:
        if name == "plain":
            exec("os.kill(os.getpid(), signal.SIGINT); time.sleep(0.3); print('ran on')")
        else:
            import slow_extension
        time.sleep(5)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted after", name)
    cli._state["interrupted"] = False
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.splitlines() == ["initialized", "interrupted after slow_extension",
                                       "interrupted after plain"], out.stdout + out.stderr


def test_config_error_is_one_line_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("targets:\n  duckdb: {type: duckdb, pth: x.duckdb}\n")
    proc = arpu(tmp_path, "ls")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"Error: {tmp_path / 'arpu.yml'}:2: targets.duckdb.pth: " \
                                  "unknown key"


def test_bad_vars_and_selectors_exit_2(built: ProjectHarness) -> None:
    proc = arpu(built.root, "build", "--vars", '{"conversion_window_days": "soon"}')
    assert proc.returncode == 2 and "--vars: conversion_window_days" in proc.stderr
    proc = arpu(built.root, "build", "--select", "no_such_model")
    assert proc.returncode == 2 and "'no_such_model' matches no model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "arpu.yml").write_text("target: duckdb\n")
    proc = arpu(tmp_path, "ingest", str(tmp_path / "nope.ndjson"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"Error: {tmp_path / 'nope.ndjson'}: no such file"


def test_ingest_prints_the_three_counts(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "bad_lines.ndjson"
    (tmp_path / "arpu.yml").write_text("target: duckdb\n")
    proc = arpu(tmp_path, "ingest", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "11 lines read, 3 loaded, 8 rejected" in proc.stdout


def test_ls_and_show(built: ProjectHarness) -> None:
    proc = arpu(built.root, "ls", "--select", "+fct_orders")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert names == ["stg_events", "int_orders", "fct_product_purchases", "fct_orders"]
    proc = arpu(built.root, "show", "category_opportunities", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["category"] for r in rows] == sorted(r["category"] for r in rows)  # by key
    assert len(rows) == 8 and next(r for r in rows if r["rank"] == "1")["category"] == \
        "Home Supplies"
    proc = arpu(built.root, "show", "fct_orders", "-n", "3", "--format", "json")
    assert len([json.loads(line) for line in proc.stdout.splitlines()]) == 3


def test_cohort_export_csv(built: ProjectHarness, tmp_path: Path) -> None:
    out = tmp_path / "cohort.csv"
    proc = arpu(built.root, "cohort", "export", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["user_key", "email", "phone", "first_viewed_at", "last_viewed_at",
                             "views"]
    cohort = built.rows("cohort_non_converted")
    home = {r["user_key"]: r for r in cohort if r["category"] == "Home Supplies"}
    assert {r["user_key"] for r in rows} == set(home)  # default: the recommended category
    for row in rows[:50]:
        stored = home[row["user_key"]]
        # passed through as stored (never invented); a leading + gets OWASP's quote
        phone = stored["phone"] or ""
        assert row["phone"] == ("'" + phone if phone.startswith("+") else phone)
        assert int(row["views"]) == stored["views"]
    assert f"Exported {len(rows):,} users of 'Home Supplies'" in proc.stdout


def test_cohort_export_ndjson_is_segment_identify(built: ProjectHarness) -> None:
    proc = arpu(built.root, "cohort", "export", "--category", "Entertainment",
                "--format", "ndjson")
    assert proc.returncode == 0, proc.stderr
    messages = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = [r for r in built.rows("cohort_non_converted") if r["category"] == "Entertainment"]
    assert len(messages) == len(expected) > 0
    for message in messages:
        assert message["type"] == "identify"
        assert message["traits"]["non_converted_entertainment"] is True
        assert ("userId" in message) != ("anonymousId" in message)
    identified = [m for m in messages if "userId" in m]
    assert identified and all("email" in m["traits"] for m in identified[:20])


def test_cohort_export_unknown_category_exits_2(built: ProjectHarness) -> None:
    proc = arpu(built.root, "cohort", "export", "--category", "Nope")
    assert proc.returncode == 2 and "no category named 'Nope'" in proc.stderr
