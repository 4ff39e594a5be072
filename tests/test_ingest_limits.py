"""Ingest's limits (issue 17, "Reliability"): whatever ingest accepts, every build on every
engine processes, and no input line stops a load or holds memory past the message limit.

`fixtures/ingest_limits.ndjson`, one message per line (tests/reference/ follows the same
rules: test_reference_diff.py builds this file with the other hand fixtures):
 1 a view, accepted                          10 nested 513 levels
 2 a product's price 1e400 (infinite)        11 a NUL (escaped \\u0000) in a category
 3 an order of revenue 1.7e308, and          12 a backslash, then u0000: no NUL, accepted
 4 another: their sum is infinite            13 nested 1,500 levels and a repeated userId
 5 price 10, then price -5 (the last wins)   14 a products string holding a NUL
 6 a product's quantity 10^16, no exponent   15 a products string nested 600 levels
 7 a price "2e15" (a numeric string)         16 NaN and nested 600 levels
 8 nested 1,500 levels (3 KB)                17 an order, accepted
 9 nested 512 levels in all, accepted
Before: lines 3, 4, 6, 7, 9 to 12 and 14 to 16 loaded; every later build failed on DuckDB
(the revenue sum is infinite) and on PostgreSQL (\\u0000 cannot be converted to text).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from support.project import (
    FIXTURES,
    ProjectHarness,
    arpu_env,
    drop_postgres_schemas,
    run_arpu,
    use_isolated_targets,
)

from runner.context import Context
from runner.errors import IngestError
from runner.ingest import Loader

LIMITS = FIXTURES / "ingest_limits.ndjson"
TOO_LARGE = "message larger than 1,048,576 bytes"  # the default limit, 1 MiB
TOO_DEEP = "JSON nested too deeply"
NUL = "holds \\u0000 (NUL), which PostgreSQL cannot store as text"
REJECTED = {
    2: "properties.products[0].price is not a finite number",
    3: "properties.revenue is larger than 1e15",
    4: "properties.revenue is larger than 1e15",
    5: "properties.price is negative",
    6: "properties.products[0].quantity is larger than 1e15",
    7: "properties.price is larger than 1e15",
    8: TOO_DEEP,
    10: TOO_DEEP,
    11: NUL,
    13: TOO_DEEP,
    14: NUL,
    15: TOO_DEEP,
    16: TOO_DEEP,
}
ACCEPTED = ["il-view", "il-512", "il-not-nul", "il-order"]
T = "2026-03-05T10:00:00Z"


def _order(message_id: str, revenue: Any, products: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"type": "track", "event": "Order Completed", "messageId": message_id,
                       "userId": f"u-{message_id}", "timestamp": T,
                       "properties": {"order_id": message_id, "revenue": revenue,
                                      "products": products or []}})


def _page(message_id: str, **extra: Any) -> str:
    return json.dumps({"type": "page", "messageId": message_id, "userId": "u",
                       "timestamp": T, **extra})


def _at_the_bound(path: Path) -> Path:
    """Two orders of exactly the default bound, 1e15, and products just under it."""
    path.write_text("\n".join([
        _order("bound-1", 1e15, [{"product_id": "b", "category": "Bound", "price": 1e15}]),
        _order("bound-2", "1e15", [{"product_id": "b", "category": "Bound",
                                    "price": 999999999999999.9, "quantity": "1e15"}]),
    ]) + "\n")
    return path


def _nul_bytes(path: Path) -> Path:
    """A NUL byte in a string, a line of NUL bytes, and a good line after them."""
    path.write_bytes(_page("nb-1", name="a\x00b").encode().replace(b"\\u0000", b"\x00")
                     + b"\n\x00\x00\x00\n" + _page("nb-ok").encode() + b"\n")
    return path


def _reasons(rows: list[dict[str, Any]], name: str) -> dict[int, str]:
    return {r["line_number"]: r["reason"] for r in rows if r["source_file"].endswith(name)}


def test_what_ingest_accepts_every_build_processes(tmp_path: Path) -> None:
    """Ingest, then `arpu build` and `arpu build --full-refresh` both exit 0 (before: exit 1,
    revenue of segment all = sum(fct_orders.revenue) failed on infinity, for ever after)."""
    project = ProjectHarness(tmp_path / "project")
    bound = _at_the_bound(tmp_path / "bound.ndjson")
    ran = run_arpu(project.root, "ingest", str(LIMITS), str(bound))
    assert ran.returncode == 0, ran.stderr
    assert f"{LIMITS}: 17 lines read, 4 loaded, 13 rejected" in ran.stdout
    assert f"{bound}: 2 lines read, 2 loaded, 0 rejected" in ran.stdout
    for args in (["build"], ["build", "--full-refresh"]):
        built = run_arpu(project.root, *args)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr
    rejected = project.rows("rejected_events")
    assert _reasons(rejected, LIMITS.name) == REJECTED
    assert _reasons(rejected, bound.name) == {}
    events = {r["event_id"] for r in project.rows("stg_events")}
    assert events == set(ACCEPTED) | {"bound-1", "bound-2"}
    orders = {r["order_id"]: r["revenue"] for r in project.rows("fct_orders")}
    assert orders == {"il-o17": 60, "bound-1": 1e15, "bound-2": 1e15}
    totals = [r["revenue"] for r in project.rows("arpu_timeseries")
              if r["grain"] == "month" and r["segment"] == "all"]
    assert totals == [pytest.approx(2e15 + 60)]


def test_the_number_bound_is_a_loader_argument(tmp_path: Path) -> None:
    path = tmp_path / "numbers.ndjson"
    path.write_text("\n".join([
        _order("n1", 100, [{"price": 100, "quantity": "100"}]),  # at the bound: accepted
        _order("n2", 100.5),
        _order("n3", "1e2", [{"price": 1, "quantity": " 101 "}]),
        _order("n4", None, [{"price": 2}, {"total": 1000}]),
        # the default bound, products written as numbers without an exponent: 16 digits
        # before the point go the slow way, 15 digits cannot exceed 1e15
        '{"type": "track", "event": "Order Completed", "userId": "u", "timestamp": "'
        + T + '", "properties": {"products": [{"price": 1000000000000000.5}]}}',
        '{"type": "track", "event": "Order Completed", "userId": "u", "timestamp": "'
        + T + '", "properties": {"products": [{"price": 999999999999999.75}]}}',
    ]) + "\n")

    def reasons(**limits: Any) -> dict[int, str]:
        con = duckdb.connect()
        Loader(con, **limits).load([path])
        return dict(con.execute("select line_number, reason from raw_rejected").fetchall())

    assert reasons() == {5: "properties.products[0].price is larger than 1e15"}
    assert reasons(max_number=100) == {
        2: "properties.revenue is larger than 100",
        3: "properties.products[0].quantity is larger than 100",
        4: "properties.products[1].total is larger than 100",
        5: "properties.products[0].price is larger than 100",
        6: "properties.products[0].price is larger than 100",
    }
    for wrong in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_number"):
            Loader(duckdb.connect(), max_number=wrong)


@pytest.mark.postgres
def test_postgres_builds_whatever_ingest_accepted(tmp_path: Path) -> None:
    """On PostgreSQL: the repeated key is rejected with its last value (-5), a NUL (escaped
    or a raw byte) never reaches a table, and the build exits 0. Before: the NUL-byte file
    aborted its load (PostgreSQL text fields cannot contain NUL (0x00) bytes) and every build
    failed in fct_product_views (unsupported Unicode escape sequence)."""
    project = ProjectHarness(tmp_path / "project")
    use_isolated_targets(project, "limits")
    with Context(project.root, target="postgres") as ctx:
        schema = ctx.compiler().published_schema
    files = [LIMITS, _at_the_bound(tmp_path / "bound.ndjson"),
             _nul_bytes(tmp_path / "nul_bytes.ndjson")]
    try:
        for path in files:
            ran = run_arpu(project.root, "ingest", "--target", "postgres", str(path))
            assert ran.returncode == 0, ran.stderr
        built = run_arpu(project.root, "build", "--target", "postgres")
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr
        with Context(project.root, target="postgres") as ctx:
            rejected = ctx.rows("rejected_events")
            events = {r["event_id"] for r in ctx.rows("stg_events")}
        assert _reasons(rejected, LIMITS.name) == REJECTED
        assert _reasons(rejected, "nul_bytes.ndjson") == {
            1: "not valid JSON (it holds a NUL byte)", 2: "not valid JSON (it holds a NUL byte)"}
        raws = {r["line_number"]: r["raw"] for r in rejected
                if r["source_file"].endswith("nul_bytes.ndjson")}
        assert raws[2] == "\ufffd" * 3 and '"a\ufffdb"' in raws[1]
        assert events == set(ACCEPTED) | {"bound-1", "bound-2", "nb-ok"}
    finally:
        drop_postgres_schemas(schema)


# Runs argv[2:] and writes its peak RSS (KB) to argv[1]. The command is forked from this small
# process: a child's peak counts the memory of the process it was forked from (pytest's, here
# with the test's 50 MB strings), until it execs.
PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def _rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("VmRSS:")), 0)


def _watched(project: Path, *args: str, seconds: float = 60, max_mb: int = 2000
             ) -> tuple[subprocess.CompletedProcess[str], float]:
    """`arpu -C project args...` as run_arpu runs it, and its peak RSS in MB. It is killed
    past `seconds` or `max_mb` of RSS: the failure tested here must not take the machine's
    memory with it."""
    environment = arpu_env()
    peak = project.parent / "peak_rss_kb"
    peak.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", PEAK_RSS, str(peak),
         sys.executable, "-m", "runner.cli", "-C", str(project), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        start_new_session=True)
    started = time.monotonic()
    while proc.poll() is None:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        try:
            rss_kb = sum(_rss_kb(int(pid)) for pid in children.read_text().split())
        except OSError:
            rss_kb = 0
        if time.monotonic() - started > seconds or rss_kb > max_mb * 1024:
            os.killpg(proc.pid, 9)
        time.sleep(0.02)
    out, err = proc.communicate()
    peak_mb = int(peak.read_text()) / 1024 if peak.exists() else float("inf")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peak_mb


def test_a_line_past_the_limit_is_never_read_whole(tmp_path: Path) -> None:
    """A 50 MB line, in the middle of a file and at its start, with the default limit (1 MiB):
    rejected with a 64 KiB start of it, the lines around it loaded, and the ingest's peak RSS
    what it is without it (about 165 MB, with 500 MB as with 50 MB). Before: 456 MB for these
    50 MB (the line was held whole, and copied as chunks were joined), 8.5 GB for a 2 GB line."""
    good = _page("around-1"), _page("around-2")
    line = '{"type": "page", "userId": "u", "pad": "' + "z" * (50 << 20) + '"}'
    middle, first = tmp_path / "middle.ndjson", tmp_path / "first.ndjson"
    middle.write_text(f"{good[0]}\n{line}\n{good[1]}\n")
    first.write_text(f"{line}\n{good[0]}\n{good[1]}")  # and the last line without its end
    project = ProjectHarness(tmp_path / "project")
    for path, bad in ((middle, 2), (first, 1)):
        ran, peak_mb = _watched(project.root, "ingest", str(path))
        assert ran.returncode == 0, ran.stderr
        assert f"{path}: 3 lines read, 2 loaded, 1 rejected" in ran.stdout
        assert peak_mb < 300, f"{path.name}: peak RSS {peak_mb:.0f} MB"
        assert project.build(["rejected_events"]).success
        (row,) = [r for r in project.rows("rejected_events")
                  if r["source_file"] == str(path)]
        assert (row["line_number"], row["reason"]) == (bad, TOO_LARGE)
        assert row["raw"] == line[:64 << 10]


def test_the_splitter_stops_at_the_limit_whatever_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines longer than max_message_bytes found whole in a chunk or over several chunks (tiny
    blocks and chunks here), blank ones (skipped, as short blank lines are), one at the end of
    the file, CRLF endings, a line exactly at the limit, NUL bytes and invalid UTF-8 in one."""
    import runner.ingest as ingest

    monkeypatch.setattr(ingest, "BLOCK_BYTES", 7)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 23)
    limit = 300
    exact = _page("exact", pad="x" * (limit - len(_page("exact", pad=""))))
    assert len(exact) == limit
    lines = [
        _page("p1").encode(),                                     # 1
        b'{"pad": "' + b"\xc3\xa9" * 400 + b'"}\r',               # 2 long, CRLF, 2-byte chars
        _page("p3").encode() + b"\r",                             # 3
        b" " * 1000,                                              # 4 blank, long
        exact.encode() + b"\r",                                   # 5 exactly the limit
        exact.encode() + b"x",                                    # 6 one byte more
        b"\x00\xff" * 500,                                        # 7 long, NUL and not UTF-8
        _page("p8").encode(),                                     # 8
        b"y" * 5000,                                              # 9 long, the file's end
    ]
    path = tmp_path / "long.ndjson"
    path.write_bytes(b"\n".join(lines))
    con = duckdb.connect()
    result = Loader(con, max_message_bytes=limit).load([path])
    assert (result.lines_read, result.loaded, result.rejected) == (8, 4, 4)
    rows = con.execute("select line_number, reason, raw from raw_rejected order by 1").fetchall()
    too_large = "message larger than 300 bytes"
    assert [(n, reason) for n, reason, _ in rows] == [
        (2, too_large), (6, too_large), (7, too_large), (9, too_large)]
    raws = {n: raw for n, _, raw in rows}
    assert raws[2] == '{"pad": "' + "é" * 400 + '"}'  # whole: shorter than 64 KiB
    assert raws[6] == exact + "x"
    assert raws[7] == "\ufffd" * 1000
    assert raws[9] == "y" * 5000
    assert [r[0] for r in con.execute("select message_id from raw_events order by 1")
            .fetchall()] == ["exact", "p1", "p3", "p8"]
    # a line longer than 64 KiB keeps its first 64 KiB, cut between characters
    path.write_bytes(_page("p1").encode() + b"\n" + b"a" + "é".encode() * 40_000 + b"\n")
    con = duckdb.connect()
    Loader(con, max_message_bytes=limit).load([path])
    ((raw,),) = con.execute("select raw from raw_rejected").fetchall()
    assert raw == "a" + "é" * 32_767 and len(raw.encode()) == (64 << 10) - 1


def test_nul_bytes_are_rejected_and_the_file_loads(tmp_path: Path) -> None:
    con = duckdb.connect()
    result = Loader(con).load([_nul_bytes(tmp_path / "nul_bytes.ndjson")])
    assert (result.lines_read, result.loaded, result.rejected) == (3, 1, 2)
    rows = con.execute("select line_number, reason, raw from raw_rejected order by 1").fetchall()
    assert [(n, reason) for n, reason, _ in rows] == [
        (1, "not valid JSON (it holds a NUL byte)"), (2, "not valid JSON (it holds a NUL byte)")]
    assert "\x00" not in rows[0][2] and rows[1][2] == "\ufffd" * 3


def test_devices_and_fifos_are_refused_before_reading(tmp_path: Path) -> None:
    """`arpu ingest /dev/zero` exits 2 with one line at once (before: it read for ever, its
    memory growing without limit); a FIFO likewise (before: it waited for a writer). In a
    folder, only regular event files are taken."""
    project = ProjectHarness(tmp_path / "project")
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = folder / "pipe.ndjson"
    os.mkfifo(fifo)
    for named in ("/dev/zero", str(fifo)):
        ran, _ = _watched(project.root, "ingest", named, seconds=20)
        assert ran.returncode == 2, ran.stderr
        assert ran.stderr.strip().splitlines() == [
            f"Error: {named}: not a regular file (a device, FIFO or socket): arpu ingests "
            "files and folders"]
    (folder / "events.ndjson").write_text(_page("in-folder") + "\n")
    ran, _ = _watched(project.root, "ingest", str(folder), seconds=20)
    assert ran.returncode == 0, ran.stderr
    assert "Total: 1 lines read, 1 loaded, 0 rejected" in ran.stdout
    with pytest.raises(IngestError, match="not a regular file") as raised:
        Loader(duckdb.connect()).load([Path("/dev/zero")])
    assert raised.value.exit_code == 2


@pytest.mark.postgres
def test_an_unset_password_env_is_one_warning(tmp_path: Path) -> None:
    """trust authentication needs no password, so arpu goes on, but says once per command
    which variable it found unset (before: not a word). Its value is never printed."""
    import yaml

    project = ProjectHarness(tmp_path / "project")
    use_isolated_targets(project, "password")
    config_path = project.root / "arpu.yml"
    config = yaml.safe_load(config_path.read_text())
    variable = f"ARPU_TEST_PASSWORD_{os.getpid()}"
    config["targets"]["postgres"]["password_env"] = variable
    config_path.write_text(yaml.safe_dump(config))
    schema = str(config["targets"]["postgres"]["schema"])
    events = tmp_path / "events.ndjson"
    events.write_text(_page("pw-1") + "\n")
    warning = (f"Warning: {variable} (password_env of the postgres target) is not set: "
               "connecting to PostgreSQL without a password from it")
    try:
        ran = run_arpu(project.root, "ingest", "--target", "postgres", str(events))
        assert ran.returncode == 0, ran.stderr
        assert ran.stderr.splitlines() == [warning]
        # a build connects several times (work schema, published views, validation)
        built = run_arpu(project.root, "build", "--target", "postgres")
        assert built.returncode == 0, built.stderr
        assert built.stderr.splitlines() == [warning]
        secret = "not-needed-by-trust"
        ran = run_arpu(project.root, "ingest", "--target", "postgres", str(events),
                       env={variable: secret})
        assert ran.returncode == 0 and ran.stderr == ""
        assert secret not in ran.stdout
    finally:
        drop_postgres_schemas(schema)


def test_the_size_limits_are_arpu_yml_keys(arpu_project: ProjectHarness, tmp_path: Path
                                           ) -> None:
    """SPEC: the size limits are configurable. `source.max_products` and
    `source.max_message_bytes` reach `arpu ingest`; the defaults are at least SPEC's 1 MiB per
    message and 10,000 products per order (ingest's defaults are the same constants)."""
    from runner.config import Source

    assert Source().max_message_bytes >= 1 << 20 and Source().max_products >= 10_000
    order = {"type": "track", "event": "Order Completed", "userId": "u1",
             "messageId": "o1", "timestamp": "2026-03-01T10:00:00Z",
             "properties": {"order_id": "A", "products": [{"price": 1}] * 3}}
    view = {"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "v1",
            "timestamp": "2026-03-01T09:00:00Z",
            "properties": {"category": "C", "name": "x" * 300}}
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps(order) + "\n" + json.dumps(view) + "\n")
    config = arpu_project.root / "arpu.yml"
    config.write_text(config.read_text() + "\nsource: {format: messages, max_products: 2, "
                      "max_message_bytes: 300}\n")
    proc = run_arpu(arpu_project.root, "ingest", str(events))
    assert proc.returncode == 0, proc.stderr
    with duckdb.connect(str(arpu_project.root / "arpu.work.duckdb"), read_only=True) as con:
        rejected = con.execute("select line_number, reason from raw_rejected order by 1"
                               ).fetchall()
    assert rejected == [(1, "properties.products has more than 2 items"),
                        (2, "message larger than 300 bytes")], rejected

    config.write_text(config.read_text().replace("max_products: 2", "max_products: -1"))
    proc = run_arpu(arpu_project.root, "ingest", str(events))
    assert proc.returncode == 2 and "arpu.yml:" in proc.stderr and "max_products" in proc.stderr
    assert "Traceback" not in proc.stderr
