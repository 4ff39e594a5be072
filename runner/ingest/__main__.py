"""`python -m runner.ingest FILE...`: keep each file's load beside it
(runner/ingest/prepared.py), as the bundled sample's is."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from runner.ingest import Loader, prepared

for name in sys.argv[1:]:
    path = Path(name).resolve()
    con = duckdb.connect()
    try:
        loader = Loader(con, use_prepared=False)  # this file's load alone, classified
        loader.load([path])
        print(prepared.export(con, path, loader.definition))
    finally:
        con.close()
