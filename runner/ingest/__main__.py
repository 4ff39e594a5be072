"""`python -m runner.ingest FILE...`: keep each file's load beside it
(runner/ingest/prepared.py), as the bundled sample's is."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from runner.ingest import Loader

for name in sys.argv[1:]:
    con = duckdb.connect()
    try:
        print(Loader(con).write_prepared(Path(name)))
    finally:
        con.close()
