"""`ivig-cds review`: load the export, evaluate every patient on IG in parallel, summarise.

Resumable: determinations.ndjson is appended one flushed batch at a time and the patients it
already holds (and those found not on IG) are skipped on the next run; a line cut short by an
interruption is dropped and evaluated again. With more than one job, one pool of worker processes
first parses the export into the SQLite grouping (group.py) and then evaluates, each worker loading
the pipeline once and reading its patients from the grouping.
"""

from __future__ import annotations

import datetime as dt
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from cds_service.review import summary
from cds_service.review.evaluate import Reviewer
from cds_service.review.group import PatientStore
from cds_service.review.source import BadLine

WORK_DIR = ".review"  # under --out: the grouping database and the not-on-IG list
BATCH = 8  # patients per task: amortises the inter-process hop, keeps progress smooth


@dataclass
class Outcome:
    reviewed: int = 0  # lines written this run
    skipped_done: int = 0  # already in determinations.ndjson (resume)
    not_on_ig: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    summary: summary.Summary | None = None


# -- worker side --------------------------------------------------------------------------------
_INIT: tuple[Path, dt.date, Path | None] | None = None
_WORKER: tuple[Reviewer, PatientStore, dt.date, Path | None] | None = None


@functools.cache
def make_reviewer(reports: bool) -> Reviewer:
    """The pipeline as `ivig-cds serve` builds it (read-only, so one per process is kept)."""
    from cds_service.app import pipeline_from_settings
    from cds_service.core.settings import get_settings
    from cds_service.render.report import ReportRenderer

    settings = get_settings()
    pipeline = pipeline_from_settings(settings)
    return Reviewer(pipeline, ReportRenderer(settings.cards_dir) if reports else None)


def _init_worker(db: Path, as_of: dt.date, reports_dir: Path | None) -> None:
    """Only remembers: the pool parses the export first, before the grouping can be opened."""
    global _INIT
    _INIT = (db, as_of, reports_dir)


def review_batch(
    reviewer: Reviewer,
    store: PatientStore,
    as_of: dt.date,
    reports_dir: Path | None,
    patients: list[str],
) -> list[tuple[str, bytes | None]]:
    """(patient, determinations.ndjson line or None when not on IG) per patient; reports are
    written before their line is returned, so a line on disk means its report is too."""

    def medication(rid: str) -> dict[str, Any] | None:
        raw = store.shared("Medication", rid)
        return None if raw is None else dict(orjson.loads(raw))

    out: list[tuple[str, bytes | None]] = []
    for pid in patients:
        resources = [orjson.loads(raw) for raw in store.resources(pid)]
        result = reviewer.review(pid, resources, medication, as_of)
        if result.report_html is not None and reports_dir is not None:
            (reports_dir / f"{pid}.html").write_text(result.report_html, encoding="utf-8")
        out.append((pid, None if result.line is None else orjson.dumps(result.line)))
    return out


def _work(patients: list[str]) -> list[tuple[str, bytes | None]]:
    global _WORKER
    if _WORKER is None:
        assert _INIT is not None, "worker not initialised"
        db, as_of, reports_dir = _INIT
        _WORKER = (
            make_reviewer(reports_dir is not None),
            PatientStore(db, readonly=True),
            as_of,
            reports_dir,
        )
    return review_batch(*_WORKER, patients)


# -- main side ----------------------------------------------------------------------------------
def finished_patients(path: Path) -> set[str]:
    """Patient ids already written; a last line cut short by an interruption is truncated away."""
    done: set[str] = set()
    if not path.exists():
        return done
    good = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(str(orjson.loads(raw)["patient"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                break
            good += len(raw)
    if good != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good)
    return done


def _batches(ids: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(islice(ids, size)):
        yield batch


Progress = Callable[[int], None]  # advance by n patients


def review(
    files: list[Path],
    out: Path,
    *,
    as_of: dt.date,
    jobs: int = 1,
    reports: bool = True,
    progress: Callable[[int], Progress] | None = None,
    on_bad_line: Callable[[BadLine], None] | None = None,
) -> Outcome:
    """Review every patient on IG in `files` into `out` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK_DIR
    work.mkdir(exist_ok=True)
    reports_dir = out / "reports" if reports else None
    if reports_dir is not None:
        reports_dir.mkdir(exist_ok=True)
    result = Outcome()
    reviewer = make_reviewer(reports) if jobs <= 1 else None
    wanted = frozenset(
        {s.resource_type for s in (reviewer.pipeline.keys if reviewer else _keys())} | {"Coverage"}
    )
    db = work / "group.db"
    store = PatientStore(db)
    with ExitStack() as stack:
        stack.callback(store.close)
        pool = stack.enter_context(_pool(jobs, (db, as_of, reports_dir))) if jobs > 1 else None
        store.load(files, wanted, result.bad_lines, pool=pool, workers=jobs)
        for bad in result.bad_lines:
            if on_bad_line is not None:
                on_bad_line(bad)
        lines_path = out / "determinations.ndjson"
        not_ig_path = work / "not-on-ig.txt"
        done = finished_patients(lines_path)
        not_ig = set(not_ig_path.read_text().split()) if not_ig_path.exists() else set()
        result.skipped_done = len(done)
        skip = done | not_ig
        total = store.count()
        advance = progress(total - len(skip)) if progress is not None else None
        pending = (pid for pid in store.patients() if pid not in skip)
        with lines_path.open("ab") as sink, not_ig_path.open("a", encoding="utf-8") as not_sink:

            def emit(batch: list[tuple[str, bytes | None]]) -> None:
                for pid, line in batch:
                    if line is None:
                        not_sink.write(pid + "\n")
                        result.not_on_ig += 1
                    else:
                        sink.write(line + b"\n")
                        result.reviewed += 1
                sink.flush()
                not_sink.flush()
                if advance is not None:
                    advance(len(batch))

            if reviewer is not None:
                for batch in _batches(pending, BATCH):
                    emit(review_batch(reviewer, store, as_of, reports_dir, batch))
            else:
                assert pool is not None
                _parallel(_batches(pending, BATCH), pool, jobs, emit)
            os.fsync(sink.fileno())
        result.not_on_ig += len(not_ig)
    result.summary = summary.write(
        out, as_of=as_of.isoformat(), reports=reports, bad_lines=len(result.bad_lines)
    )
    return result


def _keys() -> tuple[Any, ...]:
    from cds_service import knowledge, record

    return record.prefetch_keys(knowledge.load())


def _pool(jobs: int, init: tuple[Path, dt.date, Path | None]) -> ProcessPoolExecutor:
    # spawn: workers never inherit the parent's threads (the progress bar's) or open handles
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=init,
    )


def _parallel(
    batches: Iterator[list[str]],
    pool: ProcessPoolExecutor,
    jobs: int,
    emit: Callable[[list[tuple[str, bytes | None]]], None],
) -> None:
    """At most 4 batches per worker in flight: input and results stay bounded in memory."""
    running: set[Future[list[tuple[str, bytes | None]]]] = set()
    try:
        for batch in batches:
            running.add(pool.submit(_work, batch))
            if len(running) >= jobs * 4:
                finished, running = _drain(running)
                for f in finished:
                    emit(f.result())
        while running:
            finished, running = _drain(running)
            for f in finished:
                emit(f.result())
    except BaseException:
        for f in running:
            f.cancel()
        raise


def _drain(
    running: set[Future[list[tuple[str, bytes | None]]]],
) -> tuple[
    set[Future[list[tuple[str, bytes | None]]]], set[Future[list[tuple[str, bytes | None]]]]
]:
    done, rest = wait(running, return_when=FIRST_COMPLETED)
    return set(done), set(rest)


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


__all__ = ["Outcome", "default_jobs", "finished_patients", "review"]
