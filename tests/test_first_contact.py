"""A newcomer's first hour, as they meet it: `arpu` in a subprocess on a real project copy."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from support.built import Built
from support.project import FIXTURES, ProjectHarness, run_arpu

pytestmark = [pytest.mark.slow]


def _order_message(order_id: str, revenue: float) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": f"mine-{order_id}",
            "userId": "me", "timestamp": "2026-05-01T10:00:00Z",
            "properties": {"order_id": order_id, "revenue": revenue,
                           "products": [{"product_id": "p", "category": "Mine", "price": revenue}]}}


def _count(project: ProjectHarness, sql: str) -> int:
    with duckdb.connect(str(project.root / "arpu.duckdb"), read_only=True) as con:
        return int(con.execute(sql).fetchall()[0][0])


@pytest.fixture(scope="module")
def sampled(sample_built_by_cli: Built, tmp_path_factory: pytest.TempPathFactory
            ) -> ProjectHarness:
    """The README's first command: a fresh project, `arpu build` (the sample loads itself)."""
    returncode, _, stderr = sample_built_by_cli.outcome
    assert returncode == 0, stderr
    return sample_built_by_cli.copy(tmp_path_factory.mktemp("first") / "project")


def test_the_sample_never_mixes_with_your_data(sampled: ProjectHarness, tmp_path: Path) -> None:
    assert _count(sampled, "select count(*) from fct_orders") > 1000  # the sample
    mine = tmp_path / "my_events.ndjson"
    mine.write_text(json.dumps(_order_message("o-1", 42.0)) + "\n")
    done = run_arpu(sampled.root, "ingest", str(mine))
    assert done.returncode == 0, done.stderr
    assert "Removed the sample data loaded earlier (100,000 messages" in done.stdout
    done = run_arpu(sampled.root, "build")
    assert done.returncode == 0, done.stderr
    assert _count(sampled, "select count(*) from fct_orders") == 1
    assert _count(sampled, "select sum(revenue) from fct_orders") == 42
    assert _count(sampled, "select count(*) from stg_events") == 1
    # a second file of the user's removes nothing and says nothing
    other = tmp_path / "more.ndjson"
    other.write_text(json.dumps(_order_message("o-2", 8.0)) + "\n")
    done = run_arpu(sampled.root, "ingest", str(other))
    assert done.returncode == 0 and "Removed" not in done.stdout
    assert run_arpu(sampled.root, "build").returncode == 0
    assert _count(sampled, "select sum(revenue) from fct_orders") == 50


def test_seed_replaces_the_auto_loaded_sample(sample_built_by_cli: Built,
                                              tmp_path: Path) -> None:
    assert sample_built_by_cli.outcome[0] == 0  # a fresh project after `arpu build`
    project = sample_built_by_cli.copy(tmp_path / "project")
    done = run_arpu(project.root, "seed", "--events", "2000")
    assert done.returncode == 0, done.stderr
    assert "Removed the sample data loaded earlier (100,000 messages" in done.stdout
    assert run_arpu(project.root, "build").returncode == 0
    events = _count(project, "select count(*) from stg_events")
    assert 1500 < events <= 2000  # the seed's messages (less duplicates), none of the 100k


@pytest.fixture(scope="module")
def duckdb_1_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DuckDB 1.1.3, the version BI tools' drivers bundle, installed into a folder of its own
    (a virtual environment's pip bootstrap cost seconds more)."""
    folder = tmp_path_factory.mktemp("duckdb11")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(folder), "duckdb==1.1.3"],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot install duckdb 1.1.3: {done.stderr[-2000:]}"
    return folder


def test_published_file_opens_in_duckdb_1_1(sampled: ProjectHarness, duckdb_1_1: Path) -> None:
    read = ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
            "print(duckdb.__version__, con.execute('select count(*) from stg_events')"
            ".fetchall()[0][0], con.execute('select sum(revenue) from fct_orders')"
            ".fetchall()[0][0])")
    # -S: no site-packages (this environment's DuckDB), only the folder on PYTHONPATH
    done = subprocess.run([sys.executable, "-S", "-c", read, str(sampled.root / "arpu.duckdb")],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(duckdb_1_1)})
    assert done.returncode == 0, done.stderr
    version, events, revenue = done.stdout.split()
    assert version == "1.1.3" and int(events) > 0 and float(revenue) > 0


# ---------------------------------------------------------------- vars (SPEC section 3)


def test_var_mistakes_exit_2_before_anything_runs(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project")
    done = run_arpu(project.root, "build", "--vars", '{"target_categroy": "Books"}')
    assert done.returncode == 2
    assert "unknown var 'target_categroy' (known: start_date, end_date" in done.stderr
    assert "target_category" in done.stderr and "Traceback" not in done.stderr
    done = run_arpu(project.root, "build", "--vars",
                    '{"start_date": "2026-03-10", "end_date": "2026-03-01"}')
    assert done.returncode == 2 and "must be before end_date" in done.stderr
    done = run_arpu(project.root, "build", "--vars", '{"start_date": "2026-13-45"}')
    assert done.returncode == 2
    assert "'2026-13-45' is not a date or an ISO 8601 timestamp" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (project.root / "arpu.duckdb").exists()


def test_values_the_data_does_not_have_fail_the_build(tmp_path: Path) -> None:
    """experiment_variants.ndjson has the variants control, treatment (exp1), v1 and v2."""
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson", FIXTURES / "experiment_variants.ndjson")
    assert project.build().success
    categories = sorted(r["category"] for r in project.rows("category_opportunities"))
    assert len(categories) >= 2
    result = project.build(target_category="Nope")
    failed = {r.model: r.error for r in result.results if r.status == "error"}
    assert failed == {"category_opportunities": (
        "var target_category: 'Nope' is not in the data; its categories: "
        + ", ".join(repr(c) for c in categories))}
    skipped = {r.model for r in result.results if r.status == "skipped"}
    assert {"derived_user_segments", "arpu_timeseries"} <= skipped and not result.success
    result = project.build(control_variant="Nope")
    failed = {r.model: r.error for r in result.results if r.status == "error"}
    assert failed == {"experiment_results": "var control_variant: 'Nope' is not in the data; "
                                            "its variants: 'control', 'treatment', 'v1', 'v2'"}
    assert project.build(target_category=categories[-1], control_variant="treatment").success


# ---------------------------------------------------------------- artifacts


def test_a_build_that_stops_replaces_the_green_results(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project")
    project.ingest(FIXTURES / "multi_category.ndjson")
    assert run_arpu(project.root, "build").returncode == 0
    results = project.root / "target" / "run_results.json"
    assert json.loads(results.read_text())["success"] is True
    # a compile error: the build stops before any model runs
    model = project.root / "models" / "marts" / "category_funnel.sql"
    original = model.read_text()
    model.write_text(original + "\n{% broken %}\n")
    done = run_arpu(project.root, "build")
    assert done.returncode == 1, done.stderr
    payload = json.loads(results.read_text())
    assert payload["success"] is False and payload["results"] == []
    assert "Encountered unknown tag 'broken'" in payload["error"]
    junit = (project.root / "target" / "junit.xml").read_text()
    assert 'tests="1"' in junit and 'errors="1"' in junit and "unknown tag 'broken'" in junit
    # a broken expectation file
    model.write_text(original)
    (model.parent / "category_funnel.yml").write_text("expectations: [\n")
    done = run_arpu(project.root, "build")
    assert done.returncode == 2, done.stderr
    payload = json.loads(results.read_text())
    assert payload["success"] is False and "category_funnel.yml" in payload["error"]


# ---------------------------------------------------------------- ingest feedback


def test_progress_counts_bytes_read_from_disk(tmp_path: Path) -> None:
    """A gzip file's bar went to 424.9/56.6 MB: it counted inflated bytes against the
    compressed size. Progress now adds up to the file's size, gzip or not."""
    import gzip

    lines = "".join(json.dumps(_order_message(f"o-{i}", i)) + "\n" for i in range(20_000))
    plain = tmp_path / "events.ndjson"
    plain.write_text(lines + "\n\n")
    packed = tmp_path / "events.ndjson.gz"
    packed.write_bytes(gzip.compress(lines.encode()))
    project = ProjectHarness(tmp_path / "project")
    for path in (plain, packed):
        seen: list[int] = []
        with project.context() as ctx:
            ctx.ingest([path], progress=seen.append)
        assert sum(seen) == path.stat().st_size, path.name
        assert all(n >= 0 for n in seen)


def test_folders_give_their_event_files_and_name_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    (folder / "day2").mkdir(parents=True)
    (folder / "day1.ndjson").write_text(json.dumps(_order_message("o-1", 1)) + "\n")
    (folder / "day2" / "part.json.gz").write_bytes(
        gzip.compress((json.dumps(_order_message("o-2", 2)) + "\n").encode()))
    (folder / "index.html").write_text("<html>\n<body>not events</body>\n</html>\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    # Segment's S3 destination: segment-logs/<source>/<day>/<timestamp>.<id>.gz, gzipped
    # NDJSON; a .gz of anything else is skipped
    s3 = folder / "segment-logs" / "src" / "1765065600000"
    s3.mkdir(parents=True)
    (s3 / "1765069200123.4a5b6c7d-8e9f.gz").write_bytes(gzip.compress(
        "\ufeff".encode() + b"\n".join(json.dumps(_order_message(f"o-{i}", i)).encode()
                                      for i in (3, 4)) + b"\n"))
    (s3 / "notes.csv.gz").write_bytes(gzip.compress(b"order_id,revenue\no-5,5\n"))
    (s3 / "broken.gz").write_bytes(b"{not gzip}\n")
    project = ProjectHarness(tmp_path / "project")
    done = run_arpu(project.root, "ingest", str(folder))
    assert done.returncode == 0, done.stderr
    assert "Skipped 4 files that are not event files" in done.stdout
    assert all(name in done.stdout for name in ("index.html", "notes.csv.gz", "broken.gz"))
    assert "Total: 4 lines read, 4 loaded, 0 rejected" in done.stdout


def test_many_files_list_those_with_rejected_lines_and_count_the_rest(tmp_path: Path) -> None:
    """More than 20 files: each with a rejected line is named, the others are one line."""
    folder = tmp_path / "segment-logs"
    folder.mkdir()
    for i in range(23):
        lines = [json.dumps(_order_message(f"o-{i}-{j}", j)) for j in range(3)]
        if i in (4, 17):
            lines.append("{not json")
        (folder / f"part-{i:02d}.ndjson").write_text("\n".join(lines) + "\n")
    done = run_arpu(ProjectHarness(tmp_path / "project").root, "ingest", str(folder))
    assert done.returncode == 0, done.stderr
    named = [line for line in done.stdout.splitlines() if line.startswith(str(folder))]
    assert named == [f"{folder / f'part-{i:02d}.ndjson'}: 4 lines read, 3 loaded, 1 rejected"
                     for i in (4, 17)]
    assert ("... and 21 more files, 63 lines read, every line loaded (each file's counts: "
            "`arpu show raw_loads`)") in done.stdout
    assert "Total: 71 lines read, 69 loaded, 2 rejected" in done.stdout


def test_source_path_is_read_in_place_new_files_only(tmp_path: Path) -> None:
    """`source.path` (SPEC section 1: read in place from a glob): each build loads the files it
    names that no load has read as they are now; the sample is never loaded."""
    project = ProjectHarness(tmp_path / "project")
    config = project.root / "arpu.yml"
    config.write_text(config.read_text().replace(
        "source:\n  format: messages",
        "source:\n  path: segment-logs/**\n  format: messages"))
    day = project.root / "segment-logs" / "src" / "1765065600000"
    day.mkdir(parents=True)

    def write(name: str, orders: range) -> None:
        (day / name).write_bytes(gzip.compress(b"".join(
            json.dumps(_order_message(f"o-{i}", i)).encode() + b"\n" for i in orders)))

    write("1765069200000.a.gz", range(1, 4))
    write("1765072800000.b.gz", range(4, 6))
    (day / "manifest.csv").write_text("file,rows\n1765069200000.a.gz,3\n")  # not messages
    first = run_arpu(project.root, "build")
    assert first.returncode == 0, first.stdout + first.stderr
    # `**` matches the folders as well as the files: each file loaded once, the CSV not
    assert "Loaded 2 new files of source.path segment-logs/** (5 messages, 0 rejected)" \
        in first.stdout
    assert "bundled sample" not in first.stdout
    write("1765076400000.c.gz", range(6, 7))
    second = run_arpu(project.root, "build")
    assert "Loaded 1 new file of source.path segment-logs/** (1 messages, 0 rejected)" \
        in second.stdout, second.stdout + second.stderr
    third = run_arpu(project.root, "build")
    assert third.returncode == 0 and "new files" not in third.stdout
    assert [(Path(r["source_file"]).name, r["loaded"]) for r in project.rows("raw_loads")] == [
        ("1765069200000.a.gz", 3), ("1765072800000.b.gz", 2), ("1765076400000.c.gz", 1)]
    assert len(project.rows("fct_orders")) == 6
    config.write_text(config.read_text().replace("segment-logs/**", "segment-logz/*.gz"))
    typo = run_arpu(project.root, "build")
    assert (typo.returncode, typo.stderr.strip()) == (
        2, "Error: arpu.yml: source.path segment-logz/*.gz: no file matches this pattern")


def test_command_line_paths_are_relative_to_where_the_user_stands(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project")
    here = tmp_path / "elsewhere"
    here.mkdir()
    (here / "mine.ndjson").write_text(json.dumps(_order_message("o-1", 1)) + "\n")
    # the same name inside the project is not what the user meant
    (project.root / "mine.ndjson").write_text("not json\n")
    done = subprocess.run([sys.executable, "-m", "runner.cli", "-C", str(project.root),
                           "ingest", "mine.ndjson"], cwd=here, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{here / 'mine.ndjson'}: 1 lines read, 1 loaded, 0 rejected" in done.stdout
