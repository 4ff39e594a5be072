"""The Segment raw tables of a `messages` source on one target: loading files into them, the
bundled sample (loaded into a fresh project, removed when a user's data arrives), the rows of
an ingest that never finished, and which loads a build processes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from runner.engines.base import SAMPLE_LOADS
from runner.errors import IngestError

if TYPE_CHECKING:
    from runner.config import Source
    from runner.engines.base import Engine
    from runner.ingest import IngestResult

RAW_TABLES = ("raw_events", "raw_rejected")


class RawSources:
    """The raw tables on the target `engine()` connects to (made on first use, so that a
    command that never loads never connects). `sample` is the bundled sample's file."""

    def __init__(self, engine: Callable[[], Engine], source: Source, sample: Path,
                 project_dir: Path) -> None:
        self._engine = engine
        self.source = source
        self.sample = sample
        self.project_dir = project_dir
        self.sample_removed = 0  # messages of the bundled sample the last ingest removed
        self.unfinished_discarded = 0  # rows of ingests that never finished, removed so far

    @property
    def tracks_loads(self) -> bool:
        """Segment's message files are loaded by arpu, load by load; Segment's warehouse
        tables are read as they are."""
        return self.source.format == "messages"

    def ingest(self, paths: list[str | Path], progress: Callable[[int], None] | None = None,
               sample: bool = False) -> IngestResult:
        """Load message files into the raw tables. DuckDB validates and types them in bulk;
        for another target the result is copied over in one transaction per load. Paths are
        taken as given (relative to the caller's working directory).

        The bundled sample never mixes with a user's data: loading other files removes the
        sample's loads (`sample_removed` says how many messages), and loading a sample
        (`sample=True`: the fresh build's auto-load, `arpu seed`) replaces the previous one."""
        import duckdb

        from runner.ingest import Loader, expand_paths

        files = expand_paths(list(paths))
        engine = self._engine()
        engine.ensure_raw_tables()
        self.discard_unfinished_loads()
        before = self._newest_load(engine)
        loader = partial(Loader, max_message_bytes=self.source.max_message_bytes,
                         max_products=self.source.max_products)
        if engine.ingests_in_place:
            result = loader(engine.con).load(files, progress)  # type: ignore[attr-defined]
        else:
            local = duckdb.connect()
            try:
                result = loader(local).load(files, progress)
                engine.append_raw(local, before)
            finally:
                local.close()
        self.sample_removed = self._remove_sample(engine, before)
        if sample:
            engine.execute(f"insert into {SAMPLE_LOADS} select load_id, false from raw_loads "
                           f"where load_id > {before}")
        return result

    @staticmethod
    def _remove_sample(engine: Engine, before: int) -> int:
        """Remove the sample's loads up to load `before`; they stay marked `removed` so that
        the next build rebuilds its incremental models without them."""
        loads = [int(r[0]) for r in engine.fetch(
            f"select load_id from {SAMPLE_LOADS} where not removed and load_id <= {before}")[1]]
        if not loads:
            return 0
        ids = ", ".join(map(str, loads))
        messages = int(engine.scalar(
            f"select coalesce(sum(loaded), 0) from raw_loads where load_id in ({ids})"))
        engine.remove_loads(loads)
        engine.delete_where(SAMPLE_LOADS, f"load_id in ({ids})")
        engine.execute(f"insert into {SAMPLE_LOADS} "
                       f"select load_id, true from (values {', '.join(f'({i})' for i in loads)})"
                       " as removed(load_id)")
        return messages

    def discard_unfinished_loads(self) -> int:
        """Remove the rows of loads that were never recorded in raw_loads (an ingest killed
        half-way: it commits chunk by chunk and records the load at the end). Models read
        recorded loads only, so this changes no output; it keeps the raw tables clean."""
        engine = self._engine()
        # a load's id is the largest so far, and it is recorded last: unrecorded rows are those
        # above the newest recorded load. A literal bound lets the engine skip row groups, where
        # `not in (select ...)` scanned all raw data twice on every build
        condition = f"load_id > {self._newest_load(engine)}"
        rows = sum(int(engine.scalar(f"select count(*) from {table} where {condition}"))
                   for table in RAW_TABLES)
        if rows:
            for table in RAW_TABLES:
                engine.delete_where(table, condition)
        self.unfinished_discarded += rows
        return rows

    def ensure(self) -> IngestResult | None:
        """Create the raw tables and drop what an unfinished ingest left; then load the files
        of `source.path` not loaded yet, or, without it, on a fresh project with nothing
        ingested, the sample (returns what it loaded)."""
        if not self.tracks_loads:
            return None
        engine = self._engine()
        engine.ensure_raw_tables()
        self.discard_unfinished_loads()
        if self.source.path is not None:
            return self._load_new_files(engine)
        if engine.scalar("select count(*) from raw_loads") or not self.sample.exists():
            return None
        return self.ingest([self.sample], sample=True)

    def _load_new_files(self, engine: Engine) -> IngestResult | None:
        """`source.path` read in place: the files it names (a glob or a folder, relative to
        the project) that no load has read as they are now, a file being its path and size
        (Segment's storage destinations never rewrite a file; one that grew is read again, and
        its messages already loaded are duplicates that stg_events removes)."""
        from runner.ingest import expand_paths

        pattern = Path(self.source.path or "")
        try:
            files = expand_paths([pattern if pattern.is_absolute()
                                  else self.project_dir / pattern])
        except IngestError as exc:
            raise IngestError(f"source.path {self.source.path}: {exc.message}",
                              location="arpu.yml") from None
        loaded = set(engine.fetch("select source_file, bytes from raw_loads")[1])
        new: list[str | Path] = [f for f in files if (str(f), f.stat().st_size) not in loaded]
        return self.ingest(new) if new else None

    def batch_load_id(self) -> int | None:
        """The last load a build processes; None when loads are not tracked (Segment's
        warehouse tables) or the engine does not merge (Spark): incremental models are then
        built whole."""
        engine = self._engine()
        if not self.tracks_loads or not engine.supports_merge:
            return None
        if not engine.relation_exists("raw_loads"):
            return None
        return self._newest_load(engine)

    def removed_loads_pending(self) -> bool:
        """Loads were removed (the sample, when a user's data arrived) since the last full
        build: nothing incremental may continue from relations that still hold them."""
        engine = self._engine()
        if not self.tracks_loads or not engine.relation_exists(SAMPLE_LOADS):
            return False
        return bool(engine.scalar(f"select count(*) from {SAMPLE_LOADS} where removed"))

    def forget_removed_loads(self) -> None:
        """A full build published relations without the removed loads: stop tracking them."""
        self._engine().delete_where(SAMPLE_LOADS, "removed")

    @staticmethod
    def _newest_load(engine: Engine) -> int:
        return int(engine.scalar("select coalesce(max(load_id), 0) from raw_loads"))
