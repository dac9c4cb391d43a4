"""`ivig-cds review` over FHIR Bulk Data exports: the same determination as order-sign for every
scenario, expected counts on a generated population of 1 000, the parallel load equal to the serial
one, bad lines named, resume, one-line errors."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.review import group, run
from cds_service.review.source import BadLine, ndjson_files
from tests.conftest import ValidatingClient
from tests.support import review_population
from tools import bulk_export

SIGN = "/cds-services/ivig-order-sign"
AS_OF = dt.date(2025, 11, 20)  # the scenarios' authoredOn: the date their goldens were made on


def _lines(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in (out / "determinations.ndjson").read_text().splitlines()]
    by_patient = {r["patient"]: r for r in rows}
    assert len(by_patient) == len(rows), "a patient written twice"
    return by_patient


def _expected(export: Path) -> dict[str, dict[str, Any]]:
    rows = (json.loads(x) for x in (export / "expected.ndjson").read_text().splitlines())
    return {r["patient"]: r for r in rows}


def test_every_scenario_gives_the_order_sign_determination(
    tmp_path: Path, client: ValidatingClient
) -> None:
    scenarios = bulk_export.scenarios()
    export = tmp_path / "export"
    bulk_export.write_export(export, len(scenarios), fresh_ids=False)
    out = tmp_path / "out"
    run.review(ndjson_files(export), out, as_of=AS_OF, jobs=1, reports=False)
    lines = _lines(out)
    for scen in scenarios:
        r = client.post(SIGN, json=scen.request)
        assert r.status_code == 200, (scen.name, r.text)
        cards = r.json()["cards"]
        if not cards:  # no IG order: order-sign gives no guidance and review no line
            assert scen.patient_id not in lines, scen.name
            continue
        hook = cards[0]["extension"]["ivig-cds.determination"]
        line = lines[scen.patient_id]
        order = next(
            e["resource"]["id"]
            for e in scen.request["context"]["draftOrders"]["entry"]
            if e["resource"]["resourceType"] == "MedicationRequest"
        )
        assert line["order"] == f"MedicationRequest/{order}", scen.name
        # byte for byte: the same JSON text, key order included
        assert json.dumps(line["determination"]) == json.dumps(hook), scen.name
    assert len(lines) == len(scenarios) - 2  # hyperimmune-order and non-ig-order


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> review_population.Population:
    return review_population.population(tmp_path_factory)


@pytest.fixture(scope="module")
def local_review(tmp_path_factory: pytest.TempPathFactory) -> review_population.Reviewed:
    return review_population.reviewed(tmp_path_factory, "local")


def test_generated_population_gives_expected_counts(
    population: review_population.Population, local_review: review_population.Reviewed
) -> None:
    """1 000 patients, 2 workers loading 1 MiB chunks and evaluating: the expected outcomes."""
    assert local_review.exit_code == 0, local_review.output
    counts = population.counts
    lines = {p: json.loads(x) for p, x in local_review.lines().items()}
    assert review_population.outcome_counts(local_review.lines()) == counts
    assert counts["meets-criteria"] > 0
    assert counts["does-not-meet-criteria"] > 0
    expected = _expected(population.export)
    for pid, line in lines.items():  # fresh ids: the golden with the same ids renamed
        assert line["determination"] == expected[pid]["determination"], pid
    assert f"skipped bad line {population.bad_file}:2: not JSON" in local_review.output
    assert "1 bad lines skipped" in local_review.output
    html = (local_review.out / "summary.html").read_text()
    assert f"{counts['meets-criteria']}</td>" in html
    assert "signed on the review date, 2025-11-20." in html
    assert "http://" not in html
    assert "https://" not in html
    assert "<script" not in html
    assert "1 unreadable export line(s) were skipped" in html
    csv_rows = (local_review.out / "summary.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(lines)
    assert not list((local_review.out / ".review").glob("*.chunk-*"))  # scratch databases gone


def _load(files: list[Path], db: Path, pool: Executor | None) -> tuple[list[Any], ...]:
    store = group.PatientStore(db)
    bad: list[BadLine] = []
    store.load(files, frozenset({"Observation", "Patient", "MedicationRequest"}), bad, pool=pool)
    tables = tuple(
        store.db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()  # noqa: S608
        for t in ("res", "shared", "bad")
    )
    store.close()
    return (*tables, bad)


def test_parallel_load_is_the_serial_load_row_for_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files cut into byte ranges of a few lines, parsed by two workers and appended: the same
    rows in the same order, and bad lines with the line numbers of the whole file."""
    export = tmp_path / "export"
    bulk_export.write_export(export, 12, filler=2, files_per_type=2)
    path = export / "Observation.001.ndjson"
    rows = path.read_text().splitlines()
    for at, text in ((1, "{broken"), (30, "[1]"), (31, ""), (60, '{"resourceType": 3}')):
        rows.insert(at, text)
    path.write_text("\n".join(rows) + "\n")
    files = ndjson_files(export)
    monkeypatch.setattr(group, "CHUNK_BYTES", 2048)
    assert len(group.chunks([path])) > 10
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = _load(files, tmp_path / "parallel.db", pool)
    serial = _load(files, tmp_path / "serial.db", None)
    assert parallel == serial
    assert len(serial[0]) > 100
    assert [(b.line, b.problem[:10]) for b in parallel[-1]] == [
        (2, "not JSON ("),
        (31, "not a FHIR"),
        (61, "not a FHIR"),
    ]
    assert not list(tmp_path.glob("*.chunk-*"))


def test_chunks_cut_at_line_starts_and_cover_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Observation.ndjson"
    lines = [b"x" * n + b"\n" for n in (5, 40, 3, 100, 1, 0, 64, 7)]
    path.write_bytes(b"".join(lines) + b"tail without newline")
    starts = {sum(map(len, lines[:k])) for k in range(len(lines) + 1)}
    for size in (1, 10, 50, 64, 1000):
        cut = group.chunks([path], size)
        assert cut[0].start == 0
        assert cut[-1].end is None
        assert all(a.end == b.start for a, b in zip(cut, cut[1:], strict=False))
        assert all(c.start in starts for c in cut)
        assert b"".join(_read(c) for c in cut) == path.read_bytes(), size
    gz = tmp_path / "Observation.ndjson.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert group.chunks([gz], 1) == [group.Chunk(gz)]  # gzip is read from its start


def _read(chunk: group.Chunk) -> bytes:
    with chunk.path.open("rb") as f:
        f.seek(chunk.start)
        return f.read() if chunk.end is None else f.read(chunk.end - chunk.start)


@pytest.mark.parametrize("jobs", [1, 2])
def test_bad_line_is_named_with_file_and_line_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """Serially, and by two workers reading the file in chunks of a line or two."""
    export, out = tmp_path / "export", tmp_path / "out"
    bulk_export.write_export(export, 3)
    path = export / "Condition.ndjson"
    rows = path.read_text().splitlines()
    rows.insert(2, '{"resourceType": "Condition", "id": ')  # line 3: cut short
    rows.insert(4, "[1, 2]")  # line 5: JSON, not a resource
    path.write_text("\n".join(rows) + "\n")
    if jobs > 1:
        monkeypatch.setattr(group, "CHUNK_BYTES", 1024)
        assert len(group.chunks([path])) >= 4
    result = CliRunner().invoke(
        main,
        [
            "review",
            str(export),
            "--out",
            str(out),
            "--as-of",
            "2025-11-20",
            "--quiet",
            "--jobs",
            str(jobs),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"skipped bad line {path}:3: not JSON" in result.output
    assert f"skipped bad line {path}:5: not a FHIR resource" in result.output
    assert "2 bad lines skipped" in result.output
    lines = _lines(out)
    assert len(lines) == 3
    html = (out / "summary.html").read_text()
    assert "2 unreadable export line(s) were skipped" in html
    for pid in lines:  # each patient linked to their report page
        assert f"reports/{pid}.html" in html
        assert (out / "reports" / f"{pid}.html").is_file()


class Interrupted(Exception):
    pass


def test_resume_skips_finished_patients(tmp_path: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "out"
    bulk_export.write_export(export, 40)
    seen = 0

    def progress(total: int) -> run.Progress:
        assert total == 40

        def advance(n: int) -> None:
            nonlocal seen
            seen += n
            if seen >= 16:
                raise Interrupted

        return advance

    with pytest.raises(Interrupted):
        run.review(ndjson_files(export), out, as_of=AS_OF, jobs=1, reports=False, progress=progress)
    first = _lines(out)
    assert 10 <= len(first) <= 16
    with (out / "determinations.ndjson").open("ab") as f:
        f.write(b'{"patient": "p000039-scn-weig')  # a line cut short by the interruption
    totals: list[int] = []
    result = run.review(
        ndjson_files(export),
        out,
        as_of=AS_OF,
        jobs=1,
        reports=False,
        progress=lambda total: totals.append(total) or (lambda n: None),
    )
    assert totals == [40 - seen]  # finished patients (and those not on IG) are not redone
    assert result.skipped_done == len(first)
    lines = _lines(out)
    assert len(lines) == 38
    assert {k: lines[k] for k in first} == first
    expected = _expected(export)
    assert all(line["determination"] == expected[p]["determination"] for p, line in lines.items())


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing", "missing: no such file or directory"),
        (lambda d: d, "no .ndjson files in this directory"),
        (lambda d: _write(d / "manifest.json", "{not json"), "not a Bulk Data manifest"),
        (
            lambda d: _write(d / "m.json", '{"output": [{"url": "gone.ndjson"}]}'),
            "gone.ndjson does not exist",
        ),
    ],
)
def test_unreadable_input_is_one_line_and_exit_2(tmp_path: Path, setup: Any, message: str) -> None:
    source = setup(tmp_path)
    result = CliRunner().invoke(main, ["review", str(source), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("ivig-cds: review: ")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_summary_escapes_record_text(tmp_path: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "out"
    bulk_export.write_export(export, 1)  # active-cll
    path = export / "MedicationRequest.ndjson"
    order = json.loads(path.read_text())
    order["id"] = "<img src=x onerror=alert(1)>"  # not a FHIR id: order-sign answers 400
    path.write_text(json.dumps(order) + "\n")
    run.review(ndjson_files(export), out, as_of=AS_OF, jobs=1)
    (line,) = _lines(out).values()
    assert line["status"] == "not-evaluated"
    assert line["error"]["status"] == 400
    html = (out / "summary.html").read_text()
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
