"""Property: whatever shape a client's resources take, the answer is a 200 or a 4xx, never a 500.

Hypothesis replaces one element of one prefetch or draft-order resource with a value of another
JSON type (a list where a string belongs, a number where an object belongs...). Data the service
cannot read must be reported (a DataIssue in the summary card, or a 400 naming the draft order
field), not crash the request.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES, load_json, problem
from tests.support.fuzz import odd_values, slots

SEED = load_json(FIXTURES / "seed" / "order-sign-request.json")
URL = "/cds-services/ivig-order-sign"


def _resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for value in request["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            found.extend(e["resource"] for e in value.get("entry", []))
        elif isinstance(value, dict):
            found.append(value)
    found.extend(e["resource"] for e in request["context"]["draftOrders"]["entry"])
    return found


# CI runs a fixed, reproducible set; IVIG_FUZZ_EXAMPLES=5000 explores further (random seeds).
EXAMPLES = int(os.environ.get("IVIG_FUZZ_EXAMPLES", "0"))


@settings(
    max_examples=EXAMPLES or 200,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_odd_element_shapes_never_give_a_500(client: TestClient, data: st.DataObject) -> None:
    request = copy.deepcopy(SEED)
    target = data.draw(st.sampled_from(_resources(request)))
    container, key = data.draw(st.sampled_from(slots(target)))
    container[key] = data.draw(odd_values)
    response = client.post(URL, json=request)
    assert response.status_code in (200, 400, 412), response.text
    if response.status_code == 400:
        assert problem(response.json()).split(":")[0], "a 400 must name the field"


def test_ids_that_are_not_fhir_ids_are_not_echoed_into_cards(client: TestClient) -> None:
    request = copy.deepcopy(SEED)
    igg = request["prefetch"]["observations"]["entry"][0]["resource"]
    igg["id"] = "<img src=x onerror=alert(1)>"
    igg["effectiveDateTime"] = "not a date"  # unreadable: it is reported in the summary card
    response = client.post(URL, json=request)
    assert response.status_code == 200
    text = response.text
    assert "onerror" not in text
    assert "Observation/invalid-id" in response.json()["cards"][0]["detail"]


def test_vaccine_dated_before_birth_is_not_a_500(client: TestClient) -> None:
    """Found by the property above: an Immunization dated before the patient's birth date (an
    `occurrenceDateTime` of 0 reads as 1970-01-01) left vaccine-response without an age band."""
    for when in (0, "1970-01-01"):
        request = copy.deepcopy(SEED)
        for res in _resources(request):
            if res["resourceType"] == "Immunization":
                res["occurrenceDateTime"] = when
        response = client.post(URL, json=request)
        assert response.status_code == 200, response.text
