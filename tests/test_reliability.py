"""Faults a user's machine produces: a full disk, a stale WAL, a hostile project. Each test
reproduces the failure with real processes and files."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from support.project import FIXTURES, ProjectHarness, arpu_env, run_arpu

pytestmark = [pytest.mark.slow]


def _published(project: ProjectHarness) -> Path:
    return project.root / "arpu.duckdb"


def _orders(project: ProjectHarness) -> int:
    with duckdb.connect(str(_published(project)), read_only=True) as con:
        return int(con.execute("select count(*) from fct_orders").fetchall()[0][0])


def test_full_disk_reports_the_first_error_and_leaves_nothing(tmp_path: Path) -> None:
    """Files may not grow past 256 KB (RLIMIT_FSIZE: what a full disk looks like to DuckDB).
    Before: `cannot rollback - no transaction is active`, and the half-written file stayed."""
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    before = _orders(project)
    project.ingest(*sorted(FIXTURES.glob("*.ndjson")))

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    env = arpu_env()
    done = subprocess.run([sys.executable, "-m", "runner.cli", "-C", str(project.root), "build"],
                          capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=small_files)
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "cannot rollback" not in output and "Traceback" not in output
    assert "File too large" in output or "write" in output.lower()
    assert not list(project.root.glob("arpu.duckdb.publishing-*"))
    assert _orders(project) == before  # the last published file, untouched


def test_a_stale_wal_beside_the_published_file_is_removed(tmp_path: Path) -> None:
    """A reader that wrote to the published file and crashed leaves arpu.duckdb.wal; replayed
    against the next published file it made that file unopenable."""
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    writer = ("import duckdb, os, sys; con = duckdb.connect(sys.argv[1]); "
              "con.execute('set checkpoint_threshold = \\'1TB\\''); "
              "con.execute('create table bi_scratch as select range as x from range(1000)'); "
              "os._exit(0)")  # no checkpoint: the WAL stays
    subprocess.run([sys.executable, "-c", writer, str(_published(project))], check=True)
    wal = project.root / "arpu.duckdb.wal"
    assert wal.exists()
    project.ingest(FIXTURES / "revenue_fallback.ndjson")
    done = run_arpu(project.root, "build")
    assert done.returncode == 0, done.stderr
    assert not wal.exists()
    assert _orders(project) > 0  # opens


def test_templates_cannot_reach_python(tmp_path: Path) -> None:
    """Jinja in a model runs in a sandbox: `arpu ls` on a cloned project runs no code."""
    project = ProjectHarness(tmp_path / "project")
    marker = tmp_path / "pwned"
    model = project.root / "models" / "marts" / "evil.sql"
    model.write_text("select 1 as x -- {{ cycler.__init__.__globals__.os.system('touch "
                     f"{marker}') }}\n")
    done = run_arpu(project.root, "ls")
    assert done.returncode != 0 and not marker.exists()
    assert "evil.sql" in done.stderr and "Traceback" not in done.stderr


def test_a_failed_cohort_export_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "cohort.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    out = tmp_path / "cohort.csv"
    out.write_text("yesterday's export\n")
    done = run_arpu(project.root, "cohort", "export", "--category", "No such category",
                    "--out", str(out))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert out.read_text() == "yesterday's export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cohort")] == []
    done = run_arpu(project.root, "cohort", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("user_key,email,phone,")


def test_the_board_fails_when_it_cannot_read_the_warehouse(tmp_path: Path) -> None:
    """It wrote a page of empty panels and exited 0."""
    project = ProjectHarness(tmp_path / "project")
    done = run_arpu(project.root, "dashboard")
    assert done.returncode != 0
    assert "run `arpu build`" in done.stderr and "Traceback" not in done.stderr
    assert not (project.root / "target" / "dashboard.html").exists()


def test_a_killed_ingest_is_never_published(tmp_path: Path) -> None:
    """An ingest killed after its first chunk was committed, then `arpu build`: its messages
    were published (and stayed in the incremental stg_events forever). Models read recorded
    loads only, the next command removes the rest and says so, and an expectation checks it."""
    import gzip
    import json

    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    before = _orders(project)
    big = tmp_path / "big.ndjson.gz"
    line = {"type": "track", "event": "Order Completed", "userId": "ghost",
            "timestamp": "2026-03-01T00:00:00Z", "properties": {"revenue": 1}}
    with gzip.open(big, "wt") as fh:  # several 8 MB chunks
        for i in range(120_000):
            fh.write(json.dumps({**line, "messageId": f"ghost-{i}", "pad": "x" * 100}) + "\n")
    done = run_arpu(project.root, "ingest", str(big), fault="ingest:chunk")
    assert done.returncode == -9  # SIGKILL after the first chunk
    with duckdb.connect(str(project.root / "arpu.work.duckdb"), read_only=True) as con:
        left = con.execute("select count(*) from raw_events where load_id not in "
                           "(select load_id from raw_loads)").fetchall()[0][0]
    assert left > 0  # what a killed ingest leaves behind
    done = run_arpu(project.root, "build")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Removed {left:,} rows of an ingest that did not finish" in done.stdout
    assert _orders(project) == before
    with duckdb.connect(str(_published(project)), read_only=True) as con:
        assert con.execute("select count(*) from stg_events where user_key = 'ghost'"
                           ).fetchall()[0][0] == 0


def test_a_changed_export_at_the_same_path_keeps_building(tmp_path: Path) -> None:
    """A daily export written again at the same path with other bad lines: rejected_events
    had two rows for one (file, line) and every later build failed its key check."""
    project = ProjectHarness(tmp_path / "project")
    export = tmp_path / "daily.ndjson"
    good = ('{"type": "page", "messageId": "m1", "userId": "u1", '
            '"timestamp": "2026-03-01T00:00:00Z"}')
    export.write_text(good + "\nnot json, monday\n")
    project.ingest(export)
    assert project.build().success
    export.write_text(good + "\nnot json, tuesday\n")
    project.ingest(export)
    result = project.build()
    assert result.success, [(r.model, r.error) for r in result.results if r.error]
    rejected = sorted(r["raw"] for r in project.rows("rejected_events"))
    assert rejected == ["not json, monday", "not json, tuesday"]
    project.ingest(export)  # the same content again: nothing new
    assert project.build().success
    assert len(project.rows("rejected_events")) == 2


def test_a_file_name_is_never_markup(tmp_path: Path) -> None:
    """rich read `[bold]` in a file name as a style: the name printed without it."""
    events = tmp_path / "[bold]events.ndjson"
    events.write_text('{"type": "page", "messageId": "m1", "userId": "u1", '
                      '"timestamp": "2026-03-01T00:00:00Z"}\n')
    project = ProjectHarness(tmp_path / "project")
    done = run_arpu(project.root, "ingest", str(events))
    assert done.returncode == 0, done.stderr
    assert f"{events}: 1 lines read, 1 loaded, 0 rejected" in done.stdout


@pytest.mark.parametrize("point", ["begin_build:copied", "model:fct_orders", "publish"])
def test_ctrl_c_at_each_step_of_a_build_leaves_no_file(tmp_path: Path, point: str) -> None:
    """SIGINT (`ARPU_INTERRUPT`, as a user's Ctrl-C) right after the published file is copied
    for an incremental build, after a model, and before the rename. Before: a Ctrl-C while the
    published file was being copied left `arpu.duckdb.publishing-<pid>` behind (seen in CI)."""
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    before = _orders(project)
    project.ingest(FIXTURES / "revenue_fallback.ndjson")  # the next build continues from it
    done = run_arpu(project.root, "build", env={"ARPU_INTERRUPT": point})
    assert (done.returncode, done.stderr.strip()) == (130, "Interrupted"), done.stdout
    assert [p.name for p in project.root.iterdir() if "publishing" in p.name] == []
    assert _orders(project) == before
    assert run_arpu(project.root, "build").returncode == 0
    assert _orders(project) > before


def test_ctrl_c_after_the_rename_finishes_the_build(tmp_path: Path) -> None:
    """SIGINT right after the new file replaced the published one: the build is published, so
    the command finishes and says so (exit 0). Before: `Interrupted`, exit 130, for a build
    whose relations BI tools were already reading (seen in test_first_contact_cli)."""
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    before = _orders(project)
    project.ingest(FIXTURES / "revenue_fallback.ndjson")
    done = run_arpu(project.root, "build", env={"ARPU_INTERRUPT": "published"})
    assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("Done in "), done.stdout
    assert _orders(project) > before
