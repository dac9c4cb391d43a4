"""Rule cases as one change to a golden scenario: the base requests, resource builders and the
call that returns the determination (shared by the criterion tests)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY, FIXTURES, load_json

# every golden scenario: a folder of fhir_fixtures/ with an order-sign request
SCENARIOS = sorted(
    p.name for p in FIXTURES.iterdir() if p.is_dir() and (p / "order-sign-request.json").exists()
)
BASE = load_json(FIXTURES / "initial-meets" / "order-sign-request.json")
PID = BASE["context"]["patientId"]
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
URL = "/cds-services/ivig-order-sign"


def _entries(req: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = req["prefetch"][key]["entry"]
    return entries


def _titers(req: dict[str, Any]) -> list[dict[str, Any]]:
    """Titer entries: the titer search is split over two prefetch keys (titers, titers2)."""
    return [*_entries(req, "titers"), *_entries(req, "titers2")]


def _resource(req: dict[str, Any], key: str, rid_suffix: str) -> dict[str, Any]:
    return next(
        e["resource"] for e in _entries(req, key) if e["resource"]["id"].endswith(rid_suffix)
    )


def _add(req: dict[str, Any], key: str, res: dict[str, Any]) -> None:
    _entries(req, key).append({"resource": res})


def _condition(rid: str, system: str, code: str, verification: str = "confirmed") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{PID}"},
        "onsetDateTime": "2025-01-01",
    }


def _run(client: TestClient, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    req = copy.deepcopy(BASE)
    change(req)
    response = client.post("/cds-services/ivig-order-sign", json=req)
    assert response.status_code == 200, response.text
    det: dict[str, Any] = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
    return det


def _finding(det: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in det["criteria"] if c["id"] == cid)


def _order(req: dict[str, Any]) -> dict[str, Any]:
    order: dict[str, Any] = req["context"]["draftOrders"]["entry"][0]["resource"]
    return order


def _draft(req: dict[str, Any]) -> dict[str, Any]:
    draft: dict[str, Any] = req["context"]["draftOrders"]["entry"][0]["resource"]
    return draft


CONTINUATION = load_json(FIXTURES / "continuation-dated" / "order-sign-request.json")


def _continuation(client: TestClient, change: Any) -> dict[str, Any]:
    req = copy.deepcopy(CONTINUATION)
    change(req)
    response = client.post(URL, json=req)
    assert response.status_code == 200, response.text
    det: dict[str, Any] = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
    return det
