"""Card text never carries markup from the client's record: codes, units and element names are
escaped where the cards echo them."""

from __future__ import annotations

import copy
from typing import Any

from tests.conftest import ValidatingClient
from tests.support.jwt import SIGN

INJECTED = "<img/src=x/onerror=alert(1)>[click](https://evil.example)"


def _patient(req: dict[str, Any]) -> str:
    return str(req["context"]["patientId"])


def _details(client: ValidatingClient, req: dict[str, Any]) -> str:
    r = client.post(SIGN, json=req)
    assert r.status_code == 200, r.text
    return "\n".join(c["summary"] + "\n" + c["detail"] for c in r.json()["cards"])


def test_condition_code_is_not_echoed_as_markup_into_the_safety_card(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    req["prefetch"]["conditions"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c-inj",
                "subject": {"reference": f"Patient/{_patient(req)}"},
                "code": {
                    "coding": [
                        {"system": "http://x.example", "code": INJECTED},
                        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I82.401"},
                    ]
                },
            }
        }
    )
    text = _details(client, req)
    assert "Risk factors on record" in text
    assert "<img" not in text
    assert "evil.example" not in text


def test_igg_unit_is_not_echoed_as_markup_into_the_summary_card(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    req["prefetch"]["labs"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o-inj",
                "status": "final",
                "subject": {"reference": f"Patient/{_patient(req)}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
                "effectiveDateTime": "2025-01-01",
                "valueQuantity": {"value": 500, "unit": INJECTED},
            }
        }
    )
    text = _details(client, req)
    assert "Observation/o-inj" in text  # the issue is still reported
    assert "<img" not in text
    assert "evil.example" not in text


def test_prefix_matched_codes_are_not_echoed_as_markup_into_criteria(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    code = {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J18" + INJECTED}
    pid = _patient(req)
    req["prefetch"]["conditions"]["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c-inj",
                "subject": {"reference": f"Patient/{pid}"},
                "onsetDateTime": "2024-10-01",
                "code": {"coding": [code]},
            }
        }
    )
    req["prefetch"]["encounters"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Encounter",
                "id": "e-inj",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "period": {"start": "2024-11-05"},
                "reasonCode": [{"coding": [code]}],
            }
        }
    )
    text = _details(client, req)
    assert "5 bacterial infection episodes" in text  # both still count
    assert "<img" not in text
    assert "evil.example" not in text


def test_unknown_element_names_are_not_echoed_as_markup_into_cards(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    req["prefetch"]["labs"]["entry"].append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o-inj",
                "status": "final",
                "subject": {"reference": f"Patient/{_patient(req)}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
                "effectiveDateTime": "2025-01-01",
                "valueQuantity": {"value": 500, "unit": "mg/dL", INJECTED: 1},
            }
        }
    )
    text = _details(client, req)
    assert "Observation/o-inj (valueQuantity." in text  # the issue is still reported
    assert "<img" not in text
    assert "evil.example" not in text
