"""Data that is not this patient's (issue 10): a prefetch key holding another patient's resources
is unreadable (412 when the key is required, `unavailable` when optional), never filtered into a
confident determination; a reference to the same id on another server is another patient."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY
from tests.test_rule_variants import BASE, ICD, PID, _condition

URL = "/cds-services/ivig-order-sign"


def _post(client: TestClient, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(URL, json=req)
    return response.status_code, response.json()


def test_another_patients_condition_in_prefetch_makes_the_key_unreadable(
    client: TestClient,
) -> None:
    req = copy.deepcopy(BASE)
    intruder = _condition("intruder", ICD, "N04.9")
    intruder["subject"] = {"reference": "Patient/someone-else"}
    req["prefetch"]["conditions"]["entry"].append({"resource": intruder})
    status, body = _post(client, req)
    assert status == 412, body
    assert "conditions" in str(body)


def test_same_id_on_another_server_is_another_patient(client: TestClient) -> None:
    req = copy.deepcopy(BASE)
    for entry in req["prefetch"]["conditions"]["entry"]:
        entry["resource"]["subject"] = {"reference": f"http://elsewhere.example/fhir/Patient/{PID}"}
    status, _ = _post(client, req)
    assert status == 412
    # the same path under the request's own fhirServer is this patient
    req["fhirServer"] = "http://ehr.example/fhir"
    for entry in req["prefetch"]["conditions"]["entry"]:
        entry["resource"]["subject"] = {"reference": f"http://ehr.example/fhir/Patient/{PID}"}
    status, body = _post(client, req)
    assert status == 200, body
    assert body["cards"][0]["extension"][DETERMINATION_KEY]["outcome"] == "meets-criteria"


def test_another_patient_in_an_optional_key_is_unavailable_not_dropped(
    client: TestClient,
) -> None:
    req = copy.deepcopy(BASE)
    imm = copy.deepcopy(req["prefetch"]["immunizations"]["entry"][0]["resource"])
    imm["id"] = "other-ppsv23"
    imm["patient"] = {"reference": "Patient/someone-else"}
    req["prefetch"]["immunizations"]["entry"].append({"resource": imm})
    status, body = _post(client, req)
    assert status == 200, body
    det = body["cards"][0]["extension"][DETERMINATION_KEY]
    assert "immunizations" in det["unavailable"]
    assert det["outcome"] != "meets-criteria"


def test_a_patient_resource_with_another_id_is_unreadable(client: TestClient) -> None:
    req = copy.deepcopy(BASE)
    req["prefetch"]["patient"]["id"] = "someone-else"
    status, body = _post(client, req)
    assert status == 412
    assert "patient" in str(body)


def test_a_draft_order_for_another_patient_is_a_bad_request(client: TestClient) -> None:
    req = copy.deepcopy(BASE)
    req["context"]["draftOrders"]["entry"][0]["resource"]["subject"] = {
        "reference": "Patient/someone-else"
    }
    status, body = _post(client, req)
    assert status == 400
    assert "context.draftOrders.entry[0].resource.subject" in str(body)
