"""Every scenario in fhir_fixtures/ through the HTTP app: the golden determination, and the
hand-written clinical expectations (statuses and reason phrases) in scenario-expectations.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from cds_service.render.cards import human
from tests.conftest import DETERMINATION_KEY, FIXTURES, ROOT, load_json
from tests.support.scenario import SCENARIOS

SCHEMA = load_json(ROOT / "tests" / "support" / "schemas" / "determination.schema.json")
EXPECTATIONS: dict[str, dict[str, Any]] = yaml.safe_load(
    (FIXTURES / "scenario-expectations.yaml").read_text(encoding="utf-8")
)
PREFETCH_KEYS = {
    "patient",
    "conditions",
    "observations",
    "labs",
    "titers",
    "titers2",
    "medicationRequests",
    "medicationStatements",
    "medicationAdministrations",
    "medicationDispenses",
    "immunizations",
    "encounters",
}


def _determination(client: TestClient, name: str) -> dict[str, Any] | None:
    body = load_json(FIXTURES / name / "order-sign-request.json")
    response = client.post("/cds-services/ivig-order-sign", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    if not cards:
        return None
    det: dict[str, Any] = cards[0]["extension"][DETERMINATION_KEY]
    return det


def test_there_are_enough_scenarios() -> None:
    scenarios = [s for s in SCENARIOS if s != "seed"]
    assert len(scenarios) >= 15
    assert set(scenarios) == set(EXPECTATIONS), "every scenario needs hand-written expectations"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_matches_its_golden(client: TestClient, name: str) -> None:
    det = _determination(client, name)
    assert det == load_json(FIXTURES / name / "expected-determination.json")
    if det is not None:
        jsonschema.validate(det, SCHEMA)


@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_scenario_clinical_expectations(client: TestClient, name: str) -> None:
    want = EXPECTATIONS[name]
    det = _determination(client, name)
    if want.get("cards") == "empty":
        assert det is None
        return
    assert det is not None
    for key in ("outcome", "requestType", "therapyStart"):
        if key in want:
            assert det[key] == want[key], key
    by_id = {c["id"]: c for c in det["criteria"]}
    for cid, status in want.get("status", {}).items():
        assert by_id[cid]["status"] == status, (cid, by_id[cid]["reason"])
    for cid, phrases in want.get("phrases", {}).items():
        for phrase in phrases:
            assert phrase in by_id[cid]["reason"], (cid, phrase, by_id[cid]["reason"])
    for field, value in want.get("dose", {}).items():
        assert det["dose"][field] == value, field
    if "labs" in want:
        assert len(det["labs"]) == len(want["labs"])
        for lab, expected in zip(det["labs"], want["labs"], strict=True):
            for field, value in expected.items():
                assert lab[field] == value, (lab, field)
    cited = {ref for c in det["criteria"] for ref in c["evidence"]}
    cited |= {lab["reference"] for lab in det["labs"]}
    for ref in want.get("absent_evidence", []):
        assert ref not in cited, ref
    # a criterion that is not met or insufficient tells the prescriber what to document
    for c in det["criteria"]:
        if c["status"] == "insufficient" and c["id"] != "home-infusion":
            assert c["missing"], c["id"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_request_is_strict_fhir(name: str) -> None:
    """What a strict FHIR server demands: ids, Observation status+code, Patient/<id> refs."""
    body = load_json(FIXTURES / name / "order-sign-request.json")
    pid = body["context"]["patientId"]
    prefetch = body["prefetch"]
    assert set(prefetch) == PREFETCH_KEYS
    resources = [prefetch["patient"]] if prefetch["patient"] else []
    for key in PREFETCH_KEYS - {"patient"}:
        value = prefetch[key]
        if value is not None:
            assert value["resourceType"] == "Bundle"
            resources += [e["resource"] for e in value.get("entry", [])]
    resources += [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    for res in resources:
        assert res.get("id"), res
        if res["resourceType"] == "Observation":
            assert res.get("status"), res["id"]
            assert res.get("code"), res["id"]
        for key in ("subject", "patient"):
            if key in res and res["resourceType"] != "Patient":
                assert res[key] == {"reference": f"Patient/{pid}"}, res["id"]


def test_resource_ids_are_unique_across_scenarios() -> None:
    seen: dict[str, str] = {}
    for name in SCENARIOS:
        body = load_json(Path(FIXTURES / name / "order-sign-request.json"))
        for value in body["prefetch"].values():
            entries = (value or {}).get("entry", []) if isinstance(value, dict) else []
            for entry in entries:
                res = entry["resource"]
                ref = f"{res['resourceType']}/{res['id']}"
                assert seen.setdefault(ref, name) == name, f"{ref} in {name} and {seen[ref]}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_cards_are_readable(client: TestClient, name: str) -> None:
    body = load_json(FIXTURES / name / "order-sign-request.json")
    cards = client.post("/cds-services/ivig-order-sign", json=body).json()["cards"]
    for card in cards:
        assert 0 < len(card["summary"]) < 140, card["summary"]
        assert card["indicator"] in {"info", "warning", "critical"}
        assert "{" not in card["detail"], card["detail"]  # no unformatted wording fields
    if cards:
        det = cards[0]["extension"][DETERMINATION_KEY]
        text = "\n".join(c["detail"] for c in cards)
        for c in det["criteria"]:
            if c["status"] in ("insufficient", "not-met"):
                assert human(c["reason"]) in text, c["id"]  # as worded, dates shown as dates
