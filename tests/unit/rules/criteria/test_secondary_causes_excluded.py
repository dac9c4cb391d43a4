"""Secondary causes on real-world records (issue 10): only what the source says causes
hypogammaglobulinemia, at the exposure it says. Each case is one change to the complete initial
scenario (which meets criteria); the policy parameters are in policy-cvid-ig.yaml
(secondary-causes-excluded) and the per-drug exposure rule in codes.yaml (causative-drugs)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.test_rule_variants import (
    ICD,
    PID,
    RXNORM,
    SNOMED,
    _add,
    _condition,
    _entries,
    _finding,
    _run,
)

SC = "secondary-causes-excluded"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def _steroid_request(
    rid: str,
    name: str,
    code: str,
    *,
    dose_mg: float = 40,
    days: float | None = 5,
    route: tuple[str, str] | None = ("26643006", "Oral route"),
    authored: str = "2025-09-01",
    status: str = "completed",
) -> dict[str, Any]:
    repeat: dict[str, Any] = {"frequency": 1, "period": 1, "periodUnit": "d"}
    if days is not None:
        repeat["boundsDuration"] = {"value": days, "unit": "days", "system": UCUM, "code": "d"}
    dosage: dict[str, Any] = {
        "text": f"{name} {dose_mg:g} mg daily",
        "timing": {"repeat": repeat},
        "doseAndRate": [
            {"doseQuantity": {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}}
        ],
    }
    if route is not None:
        dosage["route"] = {"coding": [{"system": SNOMED, "code": route[0], "display": route[1]}]}
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": name}],
            "text": name,
        },
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": authored,
        "dosageInstruction": [dosage],
    }


def test_a_five_day_prednisone_burst_never_denies(client: TestClient) -> None:
    det = _run(
        client,
        lambda r: _add(r, "medicationRequests", _steroid_request("burst", "prednisone", "8640")),
    )
    assert _finding(det, SC)["status"] == "met"
    assert det["outcome"] == "meets-criteria"


def test_a_burst_written_as_a_repeat_count_or_supply_is_still_a_burst(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        by_count = _steroid_request("burst-count", "prednisone", "8640", days=None)
        by_count["dosageInstruction"][0]["timing"]["repeat"]["count"] = 5
        by_supply = _steroid_request("burst-supply", "prednisolone", "8638", days=None)
        by_supply["dispenseRequest"] = {
            "expectedSupplyDuration": {"value": 7, "unit": "days", "system": UCUM, "code": "d"}
        }
        _add(req, "medicationRequests", by_count)
        _add(req, "medicationRequests", by_supply)

    assert _finding(_run(client, change), SC)["status"] == "met"


def test_a_single_iv_methylprednisolone_premedication_never_denies(client: TestClient) -> None:
    admin = {
        "resourceType": "MedicationAdministration",
        "id": "premed",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "6902", "display": "methylprednisolone"}]
        },
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": "2025-10-01",
    }
    det = _run(client, lambda r: _add(r, "medicationAdministrations", admin))
    assert _finding(det, SC)["status"] == "met"


def test_eye_and_inhaled_steroids_are_not_systemic_exposure(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        eye = _steroid_request(
            "eye",
            "prednisolone acetate 1% ophthalmic suspension",
            "8638",
            days=60,
            route=("54485002", "Ophthalmic route"),
            status="active",
        )
        nasal = _steroid_request(
            "nasal", "dexamethasone nasal spray", "3264", days=90, route=None, status="active"
        )
        _add(req, "medicationRequests", eye)
        _add(req, "medicationRequests", nasal)

    assert _finding(_run(client, change), SC)["status"] == "met"


def test_a_long_systemic_steroid_course_asks_for_review_never_denies(client: TestClient) -> None:
    course = _steroid_request("long", "prednisone", "8640", dose_mg=20, days=120, status="active")
    det = _run(client, lambda r: _add(r, "medicationRequests", course))
    found = _finding(det, SC)
    assert found["status"] == "insufficient"
    assert "MedicationRequest/long" in found["evidence"]
    assert any("review of prednisone" in m for m in found["missing"])
    assert det["outcome"] == "insufficient-documentation"


def test_an_antiepileptic_asks_for_review_and_rituximab_still_denies(client: TestClient) -> None:
    lamotrigine = _steroid_request("ltg", "lamotrigine", "28439", days=None, status="active")
    det = _run(client, lambda r: _add(r, "medicationRequests", lamotrigine))
    assert _finding(det, SC)["status"] == "insufficient"
    rituximab = _steroid_request(
        "rtx", "rituximab", "121191", days=1, route=None, authored="2025-03-01"
    )
    det = _run(client, lambda r: _add(r, "medicationRequests", rituximab))
    assert _finding(det, SC)["status"] == "not-met"


def _albumin(value: float, unit: str = "g/dL", when: str = "2025-09-01") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"albumin-{value:g}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "1751-7"}]},
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def test_crohns_disease_never_denies_on_the_code_alone(client: TestClient) -> None:
    crohn = _condition("crohn", ICD, "K50.90")
    det = _run(client, lambda r: _add(r, "conditions", crohn))
    found = _finding(det, SC)
    assert found["status"] == "insufficient"
    assert any("serum albumin" in m for m in found["missing"])


def test_crohns_disease_with_normal_albumin_is_no_protein_loss(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(req, "conditions", _condition("crohn", ICD, "K50.90"))
        _add(req, "labs", _albumin(41, "g/L"))

    found = _finding(_run(client, change), SC)
    assert found["status"] == "met"
    assert "shows no protein loss" in found["reason"]
    assert "Observation/albumin-41" in found["evidence"]


def test_celiac_with_low_albumin_asks_for_the_deciding_test(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(req, "conditions", _condition("celiac", ICD, "K90.0"))
        _add(req, "labs", _albumin(2.6))

    found = _finding(_run(client, change), SC)
    assert found["status"] == "insufficient"
    assert any("alpha-1-antitrypsin" in m for m in found["missing"])


def test_lymphedema_and_a_globulin_finding_are_not_protein_loss(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(req, "conditions", _condition("lymphedema", ICD, "I89.0"))
        _add(req, "conditions", _condition("globulin", ICD, "R77.1"))
        _add(req, "conditions", _condition("hereditary-lymphedema", ICD, "Q82.0"))

    assert _finding(_run(client, change), SC)["status"] == "met"


def test_nephrotic_syndrome_is_protein_loss(client: TestClient) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("ns", ICD, "N04.9")))
    assert _finding(det, SC)["status"] == "not-met"


def test_inconclusive_hiv_serology_asks_for_the_confirmatory_test(client: TestClient) -> None:
    r75 = _condition("r75", ICD, "R75")
    r75["onsetDateTime"] = "2025-08-01"  # after the negative HIV test of 2025-05-01
    found = _finding(_run(client, lambda r: _add(r, "conditions", r75)), SC)
    assert found["status"] == "insufficient"
    assert any("confirmatory HIV test" in m for m in found["missing"])
    # a negative test on or after it settles it
    r75["onsetDateTime"] = "2025-03-01"
    assert _finding(_run(client, lambda r: _add(r, "conditions", r75)), SC)["status"] == "met"


def test_immunodeficiency_due_to_drugs_is_a_documented_cause(client: TestClient) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("dx", ICD, "D84.821")))
    assert _finding(det, SC)["status"] == "not-met"


def test_long_term_steroid_z_code_asks_for_a_medication_review(client: TestClient) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("z", ICD, "Z79.52")))
    found = _finding(det, SC)
    assert found["status"] == "insufficient"
    assert "Condition/z" in found["evidence"]


def test_myeloid_leukemia_asks_for_review_lymphoid_malignancy_denies(client: TestClient) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("aml", ICD, "C92.00")))
    assert _finding(det, SC)["status"] == "insufficient"
    det = _run(client, lambda r: _add(r, "conditions", _condition("cll", ICD, "C91.10")))
    assert _finding(det, SC)["status"] == "not-met"


def _drop_medications(req: dict[str, Any]) -> None:
    _entries(req, "medicationStatements").clear()


def test_an_empty_medication_list_is_not_a_drug_review(client: TestClient) -> None:
    found = _finding(_run(client, _drop_medications), SC)
    assert found["status"] == "insufficient"
    assert any("medication review" in m for m in found["missing"])


def test_a_stated_no_known_medications_list_is_a_drug_review(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _drop_medications(req)
        _add(
            req,
            "medicationStatements",
            {
                "resourceType": "MedicationStatement",
                "id": "nkm",
                "status": "active",
                "medicationCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips",
                            "code": "no-known-medications",
                        }
                    ]
                },
                "subject": {"reference": f"Patient/{PID}"},
                "effectiveDateTime": "2025-06-20",
            },
        )

    found = _finding(_run(client, change), SC)
    assert found["status"] == "met"
    assert "MedicationStatement/nkm" in found["evidence"]

    # an old statement is not a review of today's medications
    def stale(req: dict[str, Any]) -> None:
        change(req)
        _entries(req, "medicationStatements")[0]["resource"]["effectiveDateTime"] = "2020-01-01"

    assert _finding(_run(client, stale), SC)["status"] == "insufficient"
