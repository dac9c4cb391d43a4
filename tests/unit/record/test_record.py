"""Data that is not this patient's (issue 10): a prefetch key holding another patient's resources
is unreadable (412 when the key is required, `unavailable` when optional), never filtered into a
confident determination; a reference to the same id on another server is another patient."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from fastapi.testclient import TestClient

from cds_service.domain import (
    Status,
)
from cds_service.rules import registry as criteria
from tests.conftest import DETERMINATION_KEY
from tests.support.facts import TODAY, _ctx, _kn
from tests.support.scenario import BASE, ICD, PID, _condition, _finding, _order, _run

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


def test_bundled_medication_reference_is_resolved(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        order = _order(req)
        del order["medicationCodeableConcept"]
        order["medicationReference"] = {"reference": "Medication/hizentra-1"}
        order["dosageInstruction"][0]["timing"]["repeat"].update(period=1)
        order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"].update(value=8)
        req["context"]["draftOrders"]["entry"].append(
            {
                "resource": {
                    "resourceType": "Medication",
                    "id": "hizentra-1",
                    "code": {"text": "Hizentra 20% subcutaneous"},
                }
            }
        )

    det = _run(client, change)
    assert _finding(det, "dose")["status"] == "met"
    assert "SCIG" in _finding(det, "dose")["reason"]


def test_declined_dispense_is_not_ig_exposure() -> None:
    """A MedicationDispense with status 'declined' was never handed over: not IG exposure, so it
    neither makes the request a continuation nor turns an earlier IgG into 'unknown'."""
    from cds_service.record import RecordBuilder

    dispense = {
        "resourceType": "MedicationDispense",
        "id": "d1",
        "status": "declined",
        "medicationCodeableConcept": {"text": "Privigen 10% 20 g"},
        "subject": {"reference": "Patient/p"},
        "whenPrepared": "2025-05-01",
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([dispense], None)
    assert rec.exposures == []


def test_unreadable_ig_administration_is_not_read_as_no_therapy() -> None:
    """A MedicationAdministration of Privigen that fails validation (a malformed date) is a
    DataIssue; it must not vanish, turning the patient into 'never treated' and every IgG into
    a baseline (contract: data that could not be read is never treated as met)."""
    from cds_service.record import RecordBuilder

    admin = {
        "resourceType": "MedicationAdministration",
        "id": "ma1",
        "status": "completed",
        "medicationCodeableConcept": {"text": "Privigen 10% 40 g"},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2025-13-45",
    }
    igg = {
        "resourceType": "Observation",
        "id": "igg1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2025-06-01",
        "valueQuantity": {"value": 450, "unit": "mg/dL"},
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([admin, igg], None)
    assert any(i.ref == "MedicationAdministration/ma1" for i in rec.issues)
    assert criteria.baseline_igg(_ctx(rec)).status is Status.INSUFFICIENT


def test_unreadable_non_ig_medication_by_reference_is_not_ig_exposure() -> None:
    from cds_service.record import RecordBuilder

    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"text": "Lisinopril 10 mg tablet"},
    }
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2025-13-45",
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([med, statement], None)
    assert rec.exposures == []
    med["code"] = {"text": "Hizentra 20% 10 g"}
    rec = RecordBuilder(_kn(), "p", TODAY).build([med, statement], None)
    assert [e.ref for e in rec.exposures] == ["MedicationStatement/s1"]


def test_an_ongoing_course_ends_at_the_order_date_not_the_wall_clock() -> None:
    """A record is built as of the order's date: an active prednisone statement started on
    2024-01-01 with no end, evaluated for an order authored 2024-03-01, has run 61 days — not
    until the real today (a re-review with a past --as-of, a replayed hook call)."""
    from cds_service.record import RecordBuilder

    statement = {
        "resourceType": "MedicationStatement",
        "id": "pred",
        "status": "active",
        "medicationCodeableConcept": {"text": "Prednisone 20 mg tablet"},
        "subject": {"reference": "Patient/p"},
        "effectivePeriod": {"start": "2024-01-01"},
    }
    draft = {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "ig",
                    "status": "draft",
                    "intent": "order",
                    "subject": {"reference": "Patient/p"},
                    "authoredOn": "2024-03-01",
                    "medicationCodeableConcept": {"text": "Privigen 10% IV"},
                }
            }
        ],
    }
    for wall_clock in (dt.date(2024, 3, 1), dt.date(2026, 12, 2)):
        rec = RecordBuilder(_kn(), "p", wall_clock).build([statement], draft)
        assert rec.today == dt.date(2024, 3, 1)
        assert [(d.ref, d.days) for d in rec.drugs] == [("MedicationStatement/pred", 61.0)]
