"""`ivig-cds review` over FHIR Bulk Data exports: the same determination as order-sign for every
scenario, expected counts on a generated population, bad lines named, resume, one-line errors."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.review import run
from cds_service.review.source import ndjson_files
from tests.conftest import ValidatingClient
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


def test_generated_population_in_parallel_gives_expected_counts(tmp_path: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "out"
    counts = bulk_export.write_export(export, 300, files_per_type=2, filler=3)
    result = CliRunner().invoke(
        main,
        [
            "review",
            str(export / "manifest.json"),
            "--out",
            str(out),
            "--as-of",
            "2025-11-20",
            "--jobs",
            "2",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = _lines(out)
    expected = _expected(export)
    got = Counter(r["determination"]["outcome"] for r in lines.values())
    got["not-on-ig"] = 300 - len(lines)
    assert got == counts
    assert counts["meets-criteria"] > 0
    assert counts["does-not-meet-criteria"] > 0
    for pid, line in lines.items():  # fresh ids: the golden with the same ids renamed
        assert line["determination"] == expected[pid]["determination"], pid
    html = (out / "summary.html").read_text()
    assert f"{counts['meets-criteria']}</td>" in html
    assert "signed on the review date, 2025-11-20." in html
    assert "reports/p000000-scn-active-cll.html" in html
    assert (out / "reports" / "p000000-scn-active-cll.html").is_file()
    assert "http://" not in html
    assert "https://" not in html
    assert "<script" not in html
    assert "2 unreadable" not in html
    csv_rows = (out / "summary.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(lines)


def test_bad_line_is_named_with_file_and_line_and_skipped(tmp_path: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "out"
    bulk_export.write_export(export, 3)
    path = export / "Condition.ndjson"
    rows = path.read_text().splitlines()
    rows.insert(2, '{"resourceType": "Condition", "id": ')  # line 3: cut short
    rows.insert(4, "[1, 2]")  # line 5: JSON, not a resource
    path.write_text("\n".join(rows) + "\n")
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
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"skipped bad line {path}:3: not JSON" in result.output
    assert f"skipped bad line {path}:5: not a FHIR resource" in result.output
    assert "2 bad lines skipped" in result.output
    assert len(_lines(out)) == 3
    assert "2 unreadable export line(s) were skipped" in (out / "summary.html").read_text()


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
