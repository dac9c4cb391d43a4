"""The clinical-response criterion (continuation): infection rates before and on IG therapy."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.scenario import (
    ICD,
    _add,
    _condition,
    _continuation,
    _entries,
    _finding,
)


def test_clinical_response_compares_rates_not_lifetime_counts(client: TestClient) -> None:
    """Continuation (first dose 2025-01-10, order 2025-11-20): three infections long before
    therapy and one in its last year, then one on therapy. Lifetime counts (4 vs 1) looked like a
    response; per year it is 1 before vs 1.2 on therapy: no reduction."""

    def change(req: dict[str, Any]) -> None:
        conditions = req["prefetch"]["conditions"]["entry"]
        conditions[:] = [e for e in conditions if "infection" not in e["resource"]["id"]]
        for i, day in enumerate(("2019-02-01", "2020-03-01", "2021-04-01", "2024-06-01")):
            cond = _condition(f"old-{i}", ICD, "J18.9")
            cond["onsetDateTime"] = day
            cond["subject"] = {"reference": f"Patient/{req['context']['patientId']}"}
            conditions.append({"resource": cond})
        after = _condition("on-therapy", ICD, "J01.90")
        after["onsetDateTime"] = "2025-06-01"
        after["subject"] = {"reference": f"Patient/{req['context']['patientId']}"}
        conditions.append({"resource": after})

    found = _finding(_continuation(client, change), "clinical-response")
    assert found["status"] == "not-met", found
    assert "1 a year" in found["reason"]


# 8 ----------------------------------------------------------------------------------------------
def test_clinical_response_with_an_undocumented_start_says_so(client: TestClient) -> None:
    """IVIG on record only as an active MedicationStatement without a start (asserted
    2025-02-01): the comparison is against the first record of therapy, and the reason must say
    so. (The founding case's reviewer accepted this comparison as met, so the status stays.)"""

    def change(req: dict[str, Any]) -> None:
        pid = req["context"]["patientId"]
        _entries(req, "medicationAdministrations").clear()
        _add(
            req,
            "medicationStatements",
            {
                "resourceType": "MedicationStatement",
                "id": "ivig-hx",
                "status": "active",
                "medicationCodeableConcept": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "44206-439-40"}],
                    "text": "Privigen",
                },
                "subject": {"reference": f"Patient/{pid}"},
                "dateAsserted": "2025-02-01",
            },
        )

    found = _finding(_continuation(client, change), "clinical-response")
    assert found["status"] == "met", found
    assert "first recorded on 2025-02-01" in found["reason"]
    assert "start date is not documented" in found["reason"]
