"""Ingest at the edges of SPEC section 1 (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ProjectHarness, run_arpu


def test_one_file_is_one_source_file_however_it_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`../x/events.ndjson` from one folder, `x/./events.ndjson` from another and the absolute
    path name one file: its rejected line is one row of rejected_events, not three."""
    project = ProjectHarness(tmp_path / "project")
    data = tmp_path / "data"
    (data / "x").mkdir(parents=True)
    (data / "y").mkdir()
    events = data / "x" / "events.ndjson"
    events.write_text('{"type": "page", "userId": "u", "timestamp": "2026-03-01"}\n'
                      "not json\n")
    monkeypatch.chdir(data / "y")
    project.ingest("../x/events.ndjson")
    monkeypatch.chdir(data)
    ran = run_arpu(project.root, "ingest", "x/./events.ndjson")  # a process in another folder
    assert ran.returncode == 0, ran.stderr
    project.ingest(events.resolve())
    assert project.build(["rejected_events"]).success
    (rejected,) = project.rows("rejected_events")
    assert (rejected["source_file"], rejected["line_number"]) == (str(events.resolve()), 2)
    with project.context() as ctx:
        assert ctx.engine().fetch("select distinct source_file from raw_loads")[1] == [
            (str(events.resolve()),)]
