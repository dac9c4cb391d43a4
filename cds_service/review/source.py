"""Where a Bulk Data export's NDJSON lives, and reading it one line at a time.

A bad line is reported with its file and line number and skipped; it never stops the run and is
never dropped silently. A source that cannot be read at all raises SourceError (one line).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import unquote, urlparse

import orjson


class SourceError(Exception):
    """The export cannot be read (missing, unreadable, malformed manifest): the run stops."""


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


@dataclass(frozen=True)
class Line:
    """One decoded resource and the raw bytes it came from (stored as is, never re-encoded)."""

    resource: dict[str, Any]
    raw: bytes


def _is_ndjson(path: Path) -> bool:
    return path.name.endswith((".ndjson", ".ndjson.gz", ".jsonl"))


def ndjson_files(source: Path) -> list[Path]:
    """The NDJSON files of an export directory, or the local outputs a manifest names."""
    if not source.exists():
        raise SourceError(f"{source}: no such file or directory")
    if source.is_dir():
        manifest = source / "manifest.json"
        if manifest.is_file():
            return manifest_files(manifest)
        files = sorted(p for p in source.iterdir() if p.is_file() and _is_ndjson(p))
        if not files:
            raise SourceError(f"{source}: no .ndjson files in this directory")
        return files
    if _is_ndjson(source):
        return [source]
    return manifest_files(source)


def manifest_files(manifest: Path) -> list[Path]:
    """Local files named by a `$export` completion manifest (`output[].url`: a path relative to
    the manifest, or a file: URL); remote URLs are the export client's job."""
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        outputs = doc["output"]
        if not isinstance(outputs, list):
            raise TypeError("output is not an array")
        urls = [str(o["url"]) for o in outputs]
    except OSError as exc:
        raise SourceError(f"{manifest}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{manifest}: not a Bulk Data manifest ({exc})") from exc
    files: list[Path] = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            raise SourceError(
                f"{manifest}: output {url} is remote; give the FHIR server URL instead"
            )
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
        if not path.is_absolute():
            path = manifest.parent / path
        if not path.is_file():
            raise SourceError(f"{manifest}: output {path} does not exist")
        files.append(path)
    return files


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


class LineReader:
    """The resources of lines [start, end) of one NDJSON file, streamed (end None: to the end).

    `start` and `end` are line starts, so workers can each read a byte range of one large file.
    Bad lines are appended to `bad` numbered from 1 at `start` (the caller, who knows how many
    lines come before, adds them); `lines` counts every line read, blank and bad ones included.
    """

    def __init__(
        self, path: Path, bad: list[BadLine], *, start: int = 0, end: int | None = None
    ) -> None:
        self.path, self.bad, self.start, self.end = path, bad, start, end
        self.lines = 0

    def __iter__(self) -> Iterator[Line]:
        path, bad = self.path, self.bad
        try:
            handle = _open(path)
            if self.start:
                handle.seek(self.start)
        except OSError as exc:
            raise SourceError(f"{path}: {exc.strerror or exc}") from exc
        with handle:
            pos, end = self.start, self.end
            try:
                for raw in handle:
                    if end is not None and pos >= end:
                        break
                    pos += len(raw)
                    self.lines += 1
                    text = raw.strip()
                    if not text:
                        continue
                    try:
                        value = orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        bad.append(BadLine(str(path), self.lines, f"not JSON ({exc})"))
                        continue
                    if not isinstance(value, dict) or not isinstance(
                        value.get("resourceType"), str
                    ):
                        bad.append(BadLine(str(path), self.lines, "not a FHIR resource"))
                        continue
                    yield Line(value, text)
            except (OSError, EOFError) as exc:  # truncated gzip, I/O error mid-file
                where = f"{self.lines + 1}" if not self.start else f"byte {pos}"
                raise SourceError(f"{path}:{where}: cannot read ({exc})") from exc


def read_lines(path: Path, bad: list[BadLine]) -> Iterator[Line]:
    """The resources of one NDJSON file, streamed; bad lines are appended to `bad`."""
    return iter(LineReader(path, bad))
