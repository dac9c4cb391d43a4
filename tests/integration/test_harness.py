"""`python -m tools.harness` against the session's real FHIR server and an in-process service."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

from click.testing import CliRunner

from tests.conftest import FIXTURES, load_json
from tools import harness
from tools.harness import main
from tools.local_fhir import FhirServer


def _patients(srv: FhirServer) -> int:
    total = srv.get_json("Patient?_count=0").get("total")
    assert isinstance(total, int)
    return total


def test_harness_passes_every_scenario_and_cleans_up(
    fhir_server: FhirServer, tmp_path: Path
) -> None:
    before = _patients(fhir_server)
    out, junit = tmp_path / "results.json", tmp_path / "results.xml"
    result = CliRunner().invoke(
        main,
        [
            "--fhir-server",
            fhir_server.base_url,
            "--cleanup",
            "--json",
            str(out),
            "--junit",
            str(junit),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    assert "FAIL" not in result.output
    total = len(harness.discover(FIXTURES))
    assert f"{total} passed, 0 failed" in result.output
    assert _patients(fhir_server) == before
    doc = json.loads(out.read_text())
    assert (doc["passed"], doc["failed"], len(doc["scenarios"])) == (total, 0, total)
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == (str(total), "0")
    assert len(suite.findall("testcase")) == total


def test_harness_fails_with_a_table_and_exit_1(fhir_server: FhirServer, tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "seed", tmp_path / "seed-altered")
    expected_path = tmp_path / "seed-altered" / "expected-determination.json"
    expected = load_json(expected_path)
    expected["outcome"] = "meets-criteria"
    expected_path.write_text(json.dumps(expected))
    result = CliRunner().invoke(
        main,
        ["--fhir-server", fhir_server.base_url, "--fixtures", str(tmp_path)],
    )
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    assert "outcome" in result.output
    junit = tmp_path / "r.xml"
    again = CliRunner().invoke(
        main,
        ["--fhir-server", fhir_server.base_url, "--fixtures", str(tmp_path), "--junit", str(junit)],
    )
    assert again.exit_code == 1
    failure = ElementTree.parse(junit).getroot().find("testcase/failure")
    assert failure is not None
    assert "outcome" in (failure.text or "")


def test_harness_reports_an_unreachable_fhir_server_in_one_line(tmp_path: Path) -> None:
    from tools.local_fhir import free_port

    url = f"http://127.0.0.1:{free_port()}/fhir"
    result = CliRunner().invoke(main, ["--fhir-server", url])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"harness: FHIR server {url}: unreachable (ConnectionError)"
    ]


def test_namespacing_rewrites_ids_and_references_and_back() -> None:
    seed = harness.discover(FIXTURES)[0]
    req = harness.namespace_request(seed.request, "hx")
    assert req["context"]["patientId"] == f"hx-{seed.patient_id}"
    for res in harness.record_resources(req):
        assert res["id"].startswith("hx-")
        for key in ("subject", "patient"):
            if key in res:
                assert res[key]["reference"] == f"Patient/hx-{seed.patient_id}"
    draft = req["context"]["draftOrders"]["entry"][0]["resource"]
    assert draft["subject"]["reference"] == f"Patient/hx-{seed.patient_id}"
    assert harness.strip_namespace({"e": ["Observation/hx-igg-1"]}, "hx") == {
        "e": ["Observation/igg-1"]
    }
