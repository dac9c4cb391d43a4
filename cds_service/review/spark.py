"""`--engine spark`: the same review on Apache Spark (pyspark, the `spark` extra).

Spark reads the NDJSON (each file with its line numbers, so a bad line is named as the local
engine names it), keys each resource by its patient, groups by patient, and applies the same
`Reviewer` to each group in the executors' Python workers (one engine per worker process).
Medications, which belong to no patient, are broadcast. The driver streams the results back a
partition at a time and writes the same files as the local engine; patients already in
determinations.ndjson are skipped. `master` is `local[N]` on one machine or a cluster URL (then
--out and the export must be on storage every node sees).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from cds_service.review import summary
from cds_service.review.group import SHARED_TYPES, patient_of
from cds_service.review.run import Outcome, finished_patients, make_reviewer
from cds_service.review.source import BadLine

# (patient, determinations line or None when not on IG, report page or None)
Result = tuple[str, bytes | None, str | None]
_REVIEWER: dict[bool, Any] = {}


def _tagged(path: str) -> Callable[[str], tuple[str, str]]:
    """A line with the name of the file it is in (as the local engine names bad lines)."""
    return lambda text: (path, text)


def _keyed(item: tuple[tuple[str, str], int], wanted: frozenset[str]) -> list[tuple[str, Any]]:
    """One NDJSON line -> [(patient, raw)], [("!shared", (type, id, raw))], [("!bad", ...)]."""
    (path, text), index = item
    text = text.strip()
    if not text:
        return []
    try:
        res = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [("!bad", (path, index + 1, f"not JSON ({exc})"))]
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        return [("!bad", (path, index + 1, "not a FHIR resource"))]
    rtype = res["resourceType"]
    if rtype in SHARED_TYPES:
        return [("!shared", (rtype, res["id"], text))] if isinstance(res.get("id"), str) else []
    pid = patient_of(res) if rtype in wanted else None
    return [] if pid is None else [(pid, text)]


def _review_group(
    groups: Iterable[tuple[str, Iterable[str]]],
    as_of: dt.date,
    reports: bool,
    medications: dict[str, str],
) -> Iterator[Result]:
    if reports not in _REVIEWER:  # once per Python worker process (workers are reused)
        _REVIEWER[reports] = make_reviewer(reports)
    reviewer = _REVIEWER[reports]

    def medication(rid: str) -> dict[str, Any] | None:
        raw = medications.get(rid)
        return None if raw is None else dict(orjson.loads(raw))

    for pid, raws in groups:
        result = reviewer.review(pid, [orjson.loads(r) for r in raws], medication, as_of)
        yield pid, None if result.line is None else orjson.dumps(result.line), result.report_html


def review(
    files: list[Path],
    out: Path,
    *,
    as_of: dt.date,
    master: str = "local[*]",
    reports: bool = True,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    on_bad_line: Callable[[BadLine], None] | None = None,
) -> Outcome:
    from pyspark.sql import SparkSession

    # the executors' Python workers run this interpreter (and so find this package) unless the
    # deployment names its own (PYSPARK_PYTHON, as on a cluster)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from cds_service.review.run import WORK_DIR, _keys

    out.mkdir(parents=True, exist_ok=True)
    (out / WORK_DIR).mkdir(exist_ok=True)
    reports_dir = out / "reports" if reports else None
    if reports_dir is not None:
        reports_dir.mkdir(exist_ok=True)
    wanted = frozenset({s.resource_type for s in _keys()} | {"Coverage"})
    lines_path = out / "determinations.ndjson"
    not_ig_path = out / WORK_DIR / "not-on-ig.txt"
    done = finished_patients(lines_path)
    not_ig = set(not_ig_path.read_text().split()) if not_ig_path.exists() else set()
    skip = done | not_ig
    result = Outcome(skipped_done=len(done))
    spark = (
        SparkSession.builder.master(master)
        .appName("ivig-cds review")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")  # the command has its own bar
        .config("spark.log.level", "ERROR")
        .getOrCreate()
    )
    try:
        sc = spark.sparkContext
        lines = sc.union(
            [
                sc.textFile(str(path.resolve())).map(_tagged(str(path))).zipWithIndex()
                for path in files
            ]
        )
        keyed = lines.flatMap(lambda item: _keyed(item, wanted)).cache()
        bad: list[tuple[str, int, str]] = []
        meds: dict[str, str] = {}
        for kind, value in keyed.filter(lambda kv: kv[0].startswith("!")).collect():
            if kind == "!bad":
                bad.append(value)
            elif value[0] == "Medication":
                meds[value[1]] = value[2]
        result.bad_lines = [BadLine(p, n, m) for p, n, m in sorted(bad)]
        for b in result.bad_lines:
            if on_bad_line is not None:
                on_bad_line(b)
        skip_b = sc.broadcast(skip)
        meds_b = sc.broadcast(meds)
        patients = keyed.filter(lambda kv: not kv[0].startswith("!") and kv[0] not in skip_b.value)
        grouped = patients.groupByKey(sc.defaultParallelism).cache()
        total = grouped.count()
        keyed.unpersist()
        advance = progress(total) if progress is not None else None
        results = grouped.mapPartitions(
            lambda groups: _review_group(groups, as_of, reports, meds_b.value)
        )
        with lines_path.open("ab") as sink, not_ig_path.open("a", encoding="utf-8") as not_sink:
            for pid, line, html in results.toLocalIterator(prefetchPartitions=True):
                if line is None:
                    not_sink.write(pid + "\n")
                    result.not_on_ig += 1
                else:
                    if html is not None and reports_dir is not None:
                        (reports_dir / f"{pid}.html").write_text(html, encoding="utf-8")
                    sink.write(line + b"\n")
                    sink.flush()
                    result.reviewed += 1
                if advance is not None:
                    advance(1)
        result.not_on_ig += len(not_ig)
    finally:
        spark.stop()
    result.summary = summary.write(
        out, as_of=as_of.isoformat(), reports=reports, bad_lines=len(result.bad_lines)
    )
    return result
