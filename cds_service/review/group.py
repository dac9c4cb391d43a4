"""Group a Bulk export's resources by patient in SQLite (standard library, on disk).

The NDJSON is streamed into one table and indexed by patient once loaded, so memory stays flat
whatever the export's size; each patient's resources are then one indexed query. A finished load
is kept with a fingerprint of its input files, so a resumed run does not read the export again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.fhir.bundle import subject_of
from cds_service.review.source import BadLine, read_lines

# resources that belong to no patient but are read through references (medicationReference)
SHARED_TYPES = frozenset({"Medication"})
BATCH = 2000

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


class PatientStore:
    """The on-disk grouping. Open one per process (SQLite connections are not shared)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            self.db = sqlite3.connect(path)
            self.db.executescript(SCHEMA)
            self.db.execute("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        self.db.close()

    def loaded(self, print_: str) -> bool:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()
        return row is not None and row[0] == print_

    def load(self, files: list[Path], wanted: frozenset[str], bad: list[BadLine]) -> LoadStats:
        """Stream every file into the store (or keep a finished load of the same files)."""
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
        rows: list[tuple[str, str, bytes]] = []
        shared: list[tuple[str, str, bytes]] = []
        for path in files:
            first_bad = len(bad)
            for line in read_lines(path, bad):
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
                    self._flush(rows, shared)
            self._flush(rows, shared)
            with self.db:
                self.db.executemany(
                    "INSERT INTO bad VALUES (?, ?, ?)",
                    [(b.path, b.line, b.problem) for b in bad[first_bad:]],
                )
        with self.db:
            self.db.execute("CREATE INDEX res_patient ON res (patient)")
            self.db.execute("INSERT INTO meta VALUES ('source', ?)", (print_,))
        return stats

    def _flush(
        self, rows: list[tuple[str, str, bytes]], shared: list[tuple[str, str, bytes]]
    ) -> None:
        with self.db:
            self.db.executemany("INSERT INTO res VALUES (?, ?, ?)", rows)
            self.db.executemany("INSERT OR REPLACE INTO shared VALUES (?, ?, ?)", shared)
        rows.clear()
        shared.clear()

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
