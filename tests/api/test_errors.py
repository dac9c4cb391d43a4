"""Bad input gets a 4xx naming the field; never a 500, never a silent empty answer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import ValidatingClient, open_settings, problem
from tests.support.jwt import SIGN
from tests.support.scenario import BASE

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


def test_a_body_that_is_not_json_is_a_415(client: TestClient) -> None:
    body = json.dumps(BASE).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {"Content-Type": content_type} if content_type else {}
        r = client.post(URL, content=body, headers=headers)
        assert r.status_code == 415, (content_type, r.status_code)
    r = client.post(URL, content=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200
    r = client.post(
        URL + "/feedback", content=b'{"feedback": []}', headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415


def test_oversized_bodies_are_413(tmp_path: Path, seed_request: dict[str, Any]) -> None:
    settings = open_settings(tmp_path, max_body_bytes=4096)
    with ValidatingClient(create_app(settings)) as c:
        body = json.dumps({**seed_request, "pad": "x" * 10_000})
        for path in (SIGN, SIGN + "/feedback"):
            r = c.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.status_code, r.text)
            # a lying Content-Length does not help: the body is counted as it arrives
            chunks = iter([body.encode()[i : i + 1000] for i in range(0, len(body), 1000)])
            r = c.post(path, content=chunks, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.status_code)
        small = c.post(SIGN, json={"hook": "order-sign"})
        assert small.status_code == 400


def test_overlong_hook_instance_is_400(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = {**seed_request, "hookInstance": "h" * 129}
    r = client.post(SIGN, json=req)
    assert r.status_code == 400, r.text
    assert "hookInstance" in problem(r.json())


@pytest.mark.parametrize(
    ("field", "value"),
    [("code", "c" * 65), ("system", "s" * 201), ("display", "d" * 201)],
)
def test_overlong_override_reason_is_400(
    client: ValidatingClient, seed_request: dict[str, Any], field: str, value: str
) -> None:
    card = client.post(SIGN, json=seed_request).json()["cards"][0]
    reason = {"code": "c", "system": "s", "display": "d", field: value}
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
                "overrideReason": {"reason": reason},
            }
        ]
    }
    r = client.post(SIGN + "/feedback", json=body)
    assert r.status_code == 400, r.text


def test_feedback_items_per_request_are_bounded(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    card = client.post(SIGN, json=seed_request).json()["cards"][0]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    }
    r = client.post(SIGN + "/feedback", json={"feedback": [item] * 101})
    assert r.status_code == 400, r.text
    assert client.post(SIGN + "/feedback", json={"feedback": [item] * 100}).status_code == 200
