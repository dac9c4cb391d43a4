"""Group a Bulk export's resources by patient in SQLite (standard library, on disk).

The NDJSON is cut into chunks of whole lines (byte ranges of large files), which worker processes
parse in parallel, each into a chunk database of its own; the chunks are then appended to one
table in export order (SQLite copies them, no Python per row) and indexed by patient once, so
memory stays flat whatever the export's size and the result is the serial load's, row for row.
Each patient's resources are then one indexed query. A finished load is kept with a fingerprint of
its input files, so a resumed run does not read the export again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Executor, Future
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_service.fhir.bundle import subject_of
from cds_service.review.source import BadLine, LineReader

# resources that belong to no patient but are read through references (medicationReference)
SHARED_TYPES = frozenset({"Medication"})
BATCH = 2000
# bytes of NDJSON per load task: enough to amortise a task, small enough to share a big file
CHUNK_BYTES = 8 * 2**20

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS res (patient TEXT NOT NULL, rtype TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS shared (
    rtype TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (rtype, id)
);
CREATE TABLE IF NOT EXISTS bad (path TEXT NOT NULL, line INTEGER NOT NULL, problem TEXT NOT NULL);
"""


@dataclass
class LoadStats:
    resources: int = 0
    ignored: int = 0  # types no prefetch key asks for, or resources naming no patient
    reused: bool = False


@dataclass(frozen=True)
class Chunk:
    """Lines [start, end) of one file; start and end are line starts (end None: to the end)."""

    path: Path
    start: int = 0
    end: int | None = None


@dataclass
class ChunkResult:
    lines: int = 0  # lines read, to number the next chunk's lines of the same file
    bad: list[BadLine] = field(default_factory=list)  # numbered from 1 at the chunk's start
    stats: LoadStats = field(default_factory=LoadStats)


def patient_of(res: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to (`Patient/<id>`, relative or absolute)."""
    if res.get("resourceType") == "Patient":
        rid = res.get("id")
        return rid if isinstance(rid, str) and rid else None
    ref = subject_of(res)
    beneficiary = res.get("beneficiary")  # Coverage names its patient here
    if ref is None and isinstance(beneficiary, dict):
        ref = (
            beneficiary.get("reference") if isinstance(beneficiary.get("reference"), str) else None
        )
    if ref is None:
        return None
    ref = ref.split("/_history/", 1)[0]
    head, sep, pid = ref.rpartition("Patient/")
    if not sep or (head and not head.endswith("/")) or not pid or "/" in pid:
        return None
    return pid


def fingerprint(files: Iterable[Path]) -> str:
    """Paths, sizes and modification times: a changed export is loaded again."""
    return json.dumps([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files])


def chunks(files: Iterable[Path], size: int | None = None) -> list[Chunk]:
    """Every file in order, a large one cut at the first line start after each `size` bytes
    (a compressed file is one chunk: gzip cannot be entered mid-stream)."""
    size = size or CHUNK_BYTES
    out: list[Chunk] = []
    for path in files:
        total = path.stat().st_size
        if path.name.endswith(".gz") or total <= size:
            out.append(Chunk(path))
            continue
        bounds = [0]
        with path.open("rb") as handle:
            while bounds[-1] + size < total:
                handle.seek(bounds[-1] + size)
                handle.readline()  # to the end of the line the cut fell in
                if handle.tell() >= total:
                    break
                bounds.append(handle.tell())
        out += [Chunk(path, a, b) for a, b in zip(bounds, [*bounds[1:], None], strict=True)]
    return out


def _open_rows(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    return db


def load_chunk(chunk: Chunk, wanted: frozenset[str], db: sqlite3.Connection) -> ChunkResult:
    """Parse one chunk's lines into `db`'s res and shared tables, in line order."""
    result = ChunkResult()
    stats = result.stats
    reader = LineReader(chunk.path, result.bad, start=chunk.start, end=chunk.end)
    rows: list[tuple[str, str, bytes]] = []
    shared: list[tuple[str, str, bytes]] = []
    for line in reader:
        res = line.resource
        rtype = res["resourceType"]
        if rtype in SHARED_TYPES:
            if isinstance(res.get("id"), str):
                shared.append((rtype, res["id"], line.raw))
                stats.resources += 1
            else:
                stats.ignored += 1
            continue
        patient = patient_of(res) if rtype in wanted else None
        if patient is None:
            stats.ignored += 1
            continue
        rows.append((patient, rtype, line.raw))
        stats.resources += 1
        if len(rows) >= BATCH:
            _flush(db, rows, shared)
    _flush(db, rows, shared)
    result.lines = reader.lines
    return result


def load_chunk_file(chunk: Chunk, wanted: frozenset[str], dest: Path) -> ChunkResult:
    """A worker's task: one chunk into a database of its own at `dest` (a scratch file: no
    journal, no sync; an interrupted load starts again)."""
    dest.unlink(missing_ok=True)
    db = _open_rows(dest)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        return load_chunk(chunk, wanted, db)
    finally:
        db.close()


def _flush(
    db: sqlite3.Connection, rows: list[tuple[str, str, bytes]], shared: list[tuple[str, str, bytes]]
) -> None:
    with db:
        db.executemany("INSERT INTO res VALUES (?, ?, ?)", rows)
        db.executemany("INSERT OR REPLACE INTO shared VALUES (?, ?, ?)", shared)
    rows.clear()
    shared.clear()


class PatientStore:
    """The on-disk grouping. Open one per process (SQLite connections are not shared)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            self.db = _open_rows(path)
            self.db.execute("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        self.db.close()

    def loaded(self, print_: str) -> bool:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()
        return row is not None and row[0] == print_

    def load(
        self,
        files: list[Path],
        wanted: frozenset[str],
        bad: list[BadLine],
        *,
        pool: Executor | None = None,
        workers: int = 1,
    ) -> LoadStats:
        """Read every file into the store (or keep a finished load of the same files). With a
        process pool, its `workers` parse chunks into scratch databases beside the store, at most
        2 each ahead of the one being appended (bounded disk), appended here in export order."""
        print_ = fingerprint(files)
        stats = LoadStats()
        if self.loaded(print_):
            stats.reused = True
            bad.extend(
                BadLine(p, n, msg)
                for p, n, msg in self.db.execute(
                    "SELECT path, line, problem FROM bad ORDER BY rowid"
                )
            )
            return stats
        with self.db:
            for table in ("meta", "res", "shared", "bad"):
                self.db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed names)
            self.db.execute("DROP INDEX IF EXISTS res_patient")
        # no fsync per commit while loading (a third of the time): until the fingerprint is
        # written a crash only means loading again, and the checkpoint below syncs it all first
        self.db.execute("PRAGMA synchronous=OFF")
        lines_before: dict[Path, int] = {}  # lines of a file in its chunks already appended
        todo = chunks(files)
        results: Generator[tuple[Chunk, ChunkResult, Path | None]] = (
            ((c, load_chunk(c, wanted, self.db), None) for c in todo)
            if pool is None
            else self._in_pool(todo, wanted, pool, max(workers, 1) * 2)
        )
        with closing(results):  # stopped early, the pool's tasks are cancelled at once
            for chunk, result, scratch in results:
                if scratch is not None:
                    self._append(scratch)
                offset = lines_before.get(chunk.path, 0)
                mine = [BadLine(b.path, b.line + offset, b.problem) for b in result.bad]
                lines_before[chunk.path] = offset + result.lines
                bad.extend(mine)
                stats.resources += result.stats.resources
                stats.ignored += result.stats.ignored
                with self.db:
                    self.db.executemany(
                        "INSERT INTO bad VALUES (?, ?, ?)",
                        [(b.path, b.line, b.problem) for b in mine],
                    )
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA wal_checkpoint(FULL)")  # the loaded rows on disk, synced
        with self.db:
            self.db.execute("CREATE INDEX res_patient ON res (patient)")
            self.db.execute("INSERT INTO meta VALUES ('source', ?)", (print_,))
        return stats

    def _in_pool(
        self, todo: list[Chunk], wanted: frozenset[str], pool: Executor, ahead: int
    ) -> Generator[tuple[Chunk, ChunkResult, Path | None]]:
        """(chunk, result, scratch database) in chunk order, `ahead` chunks parsing at a time."""
        running: list[tuple[Chunk, Path, Future[ChunkResult]]] = []
        pending = iter(enumerate(todo))
        try:
            while True:
                while len(running) < ahead and (item := next(pending, None)) is not None:
                    k, chunk = item
                    scratch = self.path.with_name(f"{self.path.stem}.chunk-{k}.db")
                    task = pool.submit(load_chunk_file, chunk, wanted, scratch)
                    running.append((chunk, scratch, task))
                if not running:
                    return
                chunk, scratch, task = running.pop(0)
                yield chunk, task.result(), scratch
        finally:  # stopped early (a bad file, an interruption): no scratch file stays behind
            for *_, task in running:
                task.cancel()
            for *_, task in running:
                if not task.cancelled():
                    task.exception()  # it may still be writing its scratch file
            for leftover in self.path.parent.glob(f"{self.path.stem}.chunk-*.db"):
                leftover.unlink(missing_ok=True)

    def _append(self, scratch: Path) -> None:
        """One chunk database's rows appended here in their order, then the scratch deleted."""
        try:
            self.db.execute("ATTACH DATABASE ? AS chunk", (str(scratch),))
            try:
                with self.db:
                    self.db.execute(
                        "INSERT INTO res (patient, rtype, body)"
                        " SELECT patient, rtype, body FROM chunk.res ORDER BY rowid"
                    )
                    self.db.execute(
                        "INSERT OR REPLACE INTO shared (rtype, id, body)"
                        " SELECT rtype, id, body FROM chunk.shared ORDER BY rowid"
                    )
            finally:
                self.db.execute("DETACH DATABASE chunk")
        finally:
            scratch.unlink(missing_ok=True)

    def patients(self) -> Iterator[str]:
        """Every patient id with at least one resource, in id order (streamed)."""
        for (pid,) in self.db.execute("SELECT DISTINCT patient FROM res ORDER BY patient"):
            yield pid

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(DISTINCT patient) FROM res").fetchone()[0])

    def resources(self, patient: str) -> list[bytes]:
        """One patient's resources as exported (raw NDJSON lines), in export order."""
        return [
            row[0]
            for row in self.db.execute(
                "SELECT body FROM res WHERE patient = ? ORDER BY rowid", (patient,)
            )
        ]

    def shared(self, rtype: str, rid: str) -> bytes | None:
        row = self.db.execute(
            "SELECT body FROM shared WHERE rtype = ? AND id = ?", (rtype, rid)
        ).fetchone()
        return None if row is None else bytes(row[0])
