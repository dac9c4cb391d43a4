"""Bad input gets a 4xx naming the field; never a 500, never a silent empty answer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import problem

URL = "/cds-services/ivig-order-sign"


def _drop(body: dict[str, Any], *path: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post(
        URL, content=b'{"hook": "order-sign",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "malformed JSON" in problem(r.json())


def test_non_object_body_is_400(client: TestClient) -> None:
    r = client.post(URL, json=[1, 2])
    assert r.status_code == 400


@pytest.mark.parametrize("field", ["hook", "hookInstance", "context"])
def test_missing_top_level_field_is_400(
    client: TestClient, seed_request: dict[str, Any], field: str
) -> None:
    r = client.post(URL, json=_drop(seed_request, field))
    assert r.status_code == 400
    assert problem(r.json()).startswith(field)


@pytest.mark.parametrize("field", ["patientId", "userId", "draftOrders"])
def test_context_not_fitting_order_sign_is_400(
    client: TestClient, seed_request: dict[str, Any], field: str
) -> None:
    r = client.post(URL, json=_drop(seed_request, "context", field))
    assert r.status_code == 400
    assert problem(r.json()).startswith(f"context.{field}")


def test_wrong_hook_is_400(client: TestClient, seed_request: dict[str, Any]) -> None:
    seed_request["hook"] = "patient-view"
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert problem(r.json()).startswith("hook")


def test_draft_orders_not_a_bundle_is_400(client: TestClient, seed_request: dict[str, Any]) -> None:
    seed_request["context"]["draftOrders"] = {"resourceType": "MedicationRequest", "id": "x"}
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert problem(r.json()).startswith("context.draftOrders")


def test_draft_order_entry_without_resource_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["context"]["draftOrders"]["entry"] = [{"fullUrl": "x"}]
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert "context.draftOrders.entry[0].resource" in problem(r.json())


def test_prefetch_key_of_wrong_type_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["prefetch"]["conditions"] = seed_request["prefetch"]["patient"]
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert problem(r.json()).startswith("prefetch.conditions")


def test_prefetch_entry_of_wrong_type_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["prefetch"]["observations"]["entry"].append(
        {"resource": {"resourceType": "Condition", "id": "odd"}}
    )
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert "prefetch.observations.entry[" in problem(r.json())


def test_prefetch_value_not_an_object_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["prefetch"]["patient"] = "Patient/seed-cvid-1"
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert problem(r.json()).startswith("prefetch.patient")


def test_fhir_authorization_without_server_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "patient/*.read",
        "subject": "ivig-cds",
    }
    r = client.post(URL, json=seed_request)
    assert r.status_code == 400
    assert problem(r.json()).startswith("fhirServer")


def test_unknown_service_is_404(client: TestClient, seed_request: dict[str, Any]) -> None:
    r = client.post("/cds-services/no-such-service", json=seed_request)
    assert r.status_code == 404


def test_missing_required_data_without_fhir_server_is_412(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    del seed_request["prefetch"]["observations"]
    r = client.post(URL, json=seed_request)
    assert r.status_code == 412
    assert "observations" in problem(r.json())


def test_no_prefetch_at_all_without_fhir_server_is_412(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    del seed_request["prefetch"]
    r = client.post(URL, json=seed_request)
    assert r.status_code == 412


def test_null_prefetch_key_means_no_data_not_met(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["prefetch"]["conditions"] = None
    r = client.post(URL, json=seed_request)
    assert r.status_code == 200
    det = r.json()["cards"][0]["extension"]["ivig-cds.determination"]
    status = {c["id"]: c["status"] for c in det["criteria"]}
    assert status["diagnosis"] == "insufficient"
    assert status["infection-history"] == "insufficient"


def test_unreadable_resource_is_reported_not_a_500(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    igg = seed_request["prefetch"]["observations"]["entry"][0]["resource"]
    igg["effectiveDateTime"] = "yesterday"
    r = client.post(URL, json=seed_request)
    assert r.status_code == 200
    cards = r.json()["cards"]
    assert "Observation/igg-2025-03" in cards[0]["detail"]
    det = cards[0]["extension"]["ivig-cds.determination"]
    assert "Observation/igg-2025-03" not in [lab["reference"] for lab in det["labs"]]
