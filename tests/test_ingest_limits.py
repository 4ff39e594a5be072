"""Ingest's limits (issue 17, "Reliability"): no input line stops a load or holds memory past
the message limit, and what is not a file is refused before it is read.
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
from conftest import ProjectHarness

from runner.errors import IngestError
from runner.ingest import Loader

TOO_LARGE = "message larger than 1,048,576 bytes"  # the default limit, 1 MiB
T = "2026-03-05T10:00:00Z"


def _page(message_id: str, **extra: Any) -> str:
    return json.dumps({"type": "page", "messageId": message_id, "userId": "u",
                       "timestamp": T, **extra})


def _nul_bytes(path: Path) -> Path:
    """A NUL byte in a string, a line of NUL bytes, and a good line after them."""
    path.write_bytes(_page("nb-1", name="a\x00b").encode().replace(b"\\u0000", b"\x00")
                     + b"\n\x00\x00\x00\n" + _page("nb-ok").encode() + b"\n")
    return path


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
    environment = {k: v for k, v in os.environ.items() if k != "ARPU_FAULT"}
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
