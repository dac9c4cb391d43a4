"""The founding case: the service must reach the reviewer's determination from FHIR alone."""

from __future__ import annotations

from typing import Any

import jsonschema
from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY, FIXTURES, ROOT, load_json

# verbatim copy of shared/contract/determination.schema.json (the fixed interface)
CONTRACT_SCHEMA = ROOT / "tests" / "support" / "schemas" / "determination.schema.json"


def _post(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/cds-services/ivig-order-sign", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_seed_golden_determination(client: TestClient, seed_request: dict[str, Any]) -> None:
    cards = _post(client, seed_request)["cards"]
    determination = cards[0]["extension"][DETERMINATION_KEY]
    expected = load_json(FIXTURES / "seed" / "expected-determination.json")
    assert determination == expected


def test_seed_statuses_match_the_reviewer(client: TestClient, seed_request: dict[str, Any]) -> None:
    det = _post(client, seed_request)["cards"][0]["extension"][DETERMINATION_KEY]
    status = {c["id"]: c["status"] for c in det["criteria"]}
    assert det["outcome"] == "insufficient-documentation"
    assert det["requestType"] == "continuation"
    assert det["therapyStart"] is None
    assert status["baseline-igg"] == "insufficient"
    assert status["secondary-causes-excluded"] == "insufficient"
    for met in ("infection-history", "vaccine-response", "age", "diagnosis", "clinical-response"):
        assert status[met] == "met", met
    assert status["dose"] == "insufficient"
    assert status["home-infusion"] == "insufficient"
    assert [lab["valueMgDl"] for lab in det["labs"]] == [471, 453, 447]
    assert all(lab["phase"] != "baseline" for lab in det["labs"])
    assert det["dose"] == {
        "gramsPerDose": 40,
        "intervalDays": 28,
        "weightKg": None,
        "mgPerKgPer4Weeks": None,
        "status": "insufficient",
    }


def test_seed_determination_fits_the_contract_schema(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    det = _post(client, seed_request)["cards"][0]["extension"][DETERMINATION_KEY]
    jsonschema.validate(
        det,
        load_json(CONTRACT_SCHEMA),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_seed_cards_say_what_to_do(client: TestClient, seed_request: dict[str, Any]) -> None:
    cards = _post(client, seed_request)["cards"]
    assert cards[0]["indicator"] == "warning"
    assert all(len(c["summary"]) < 140 for c in cards)
    text = "\n".join(c["summary"] + "\n" + c["detail"] for c in cards).lower()
    # each next step a clinician must take, in words they can act on
    for phrase in (
        "pre-treatment IgG",
        "date IG therapy was started",
        "HIV-1/2",
        "CBC with differential",
        "serum protein electrophoresis",
        "body weight",
        "renal function",
        "liver tests",
        "S9338",
        "99601",
    ):
        assert phrase.lower() in text, phrase
    dose_card = next(c for c in cards if c["extension"]["ivig-cds.card-type"] == "dose")
    # 40 g every 4 weeks at 50 / 70 / 90 kg
    for row in ("| 50 kg | 800 mg/kg", "| 70 kg | 571.4 mg/kg", "| 90 kg | 444.4 mg/kg"):
        assert row in dose_card["detail"], row


def test_non_ig_order_gets_no_cards(client: TestClient, seed_request: dict[str, Any]) -> None:
    draft = seed_request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "308182",
                "display": "amoxicillin 500 MG Oral Capsule",
            }
        ],
        "text": "amoxicillin 500 mg",
    }
    assert _post(client, seed_request) == {"cards": []}
