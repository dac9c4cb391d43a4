"""Targeted rule cases, each a small change to the complete initial scenario (which meets criteria).

Each test names the clinical rule it pins down; the source is in the policy file."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY, FIXTURES, load_json

BASE = load_json(FIXTURES / "initial-meets" / "order-sign-request.json")
PID = BASE["context"]["patientId"]
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


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


def test_base_meets_criteria(client: TestClient) -> None:
    assert _run(client, lambda r: None)["outcome"] == "meets-criteria"


def _recode_cvid(system: str, code: str) -> Callable[[dict[str, Any]], None]:
    def change(req: dict[str, Any]) -> None:
        _resource(req, "conditions", "-cvid")["code"] = {
            "coding": [{"system": system, "code": code}]
        }

    return change


def test_general_immunodeficiency_snomed_is_not_a_covered_diagnosis(client: TestClient) -> None:
    found = _finding(_run(client, _recode_cvid(SNOMED, "234532001")), "diagnosis")
    assert found["status"] == "insufficient"
    assert "general immunodeficiency" in found["reason"]


def test_pi_code_off_the_covered_list_is_not_met(client: TestClient) -> None:
    found = _finding(_run(client, _recode_cvid(ICD, "D80.1")), "diagnosis")
    assert found["status"] == "not-met"
    assert "D80.1" in found["reason"]
    assert "§50.6" in found["reason"]


def test_unverified_snomed_cvid_candidate_is_not_matched(client: TestClient) -> None:
    assert (
        _finding(_run(client, _recode_cvid(SNOMED, "5908001")), "diagnosis")["status"] == "not-met"
    )


def test_verified_snomed_hiv_condition_is_a_secondary_cause(client: TestClient) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("hiv-dx", SNOMED, "86406008")))
    found = _finding(det, "secondary-causes-excluded")
    assert found["status"] == "not-met"
    assert "infection" in found["reason"]


def test_suspected_malignancy_leaves_secondary_causes_open(client: TestClient) -> None:
    cll = _condition("cll-dx", ICD, "C91.10", verification="provisional")
    found = _finding(
        _run(client, lambda r: _add(r, "conditions", cll)), "secondary-causes-excluded"
    )
    assert found["status"] == "insufficient"
    assert "provisional" in found["reason"]
    assert "Condition/cll-dx" in found["evidence"]


def test_refuted_malignancy_is_ignored(client: TestClient) -> None:
    cll = _condition("cll-dx", ICD, "C91.10", verification="refuted")
    det = _run(client, lambda r: _add(r, "conditions", cll))
    assert _finding(det, "secondary-causes-excluded")["status"] == "met"


def test_rituximab_outside_the_look_back_does_not_count(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(
            req,
            "medicationStatements",
            {
                "resourceType": "MedicationStatement",
                "id": "rtx-old",
                "status": "completed",
                "medicationCodeableConcept": {"text": "Rituxan 1000 mg IV"},
                "subject": {"reference": f"Patient/{PID}"},
                "effectivePeriod": {"start": "2022-01-03", "end": "2022-01-17"},
            },
        )

    assert _finding(_run(client, change), "secondary-causes-excluded")["status"] == "met"


def test_rituximab_by_brand_name_inside_the_look_back_is_not_met(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(
            req,
            "medicationAdministrations",
            {
                "resourceType": "MedicationAdministration",
                "id": "rtx-recent",
                "status": "completed",
                "medicationCodeableConcept": {"text": "Truxima (rituximab-abbs) 1000 mg"},
                "subject": {"reference": f"Patient/{PID}"},
                "effectiveDateTime": "2025-03-01",  # before the low IgG of 2025-05-01
            },
        )

    found = _finding(_run(client, change), "secondary-causes-excluded")
    assert found["status"] == "not-met"
    assert "MedicationAdministration/rtx-recent" in found["evidence"]

    def later(req: dict[str, Any]) -> None:  # first given after the low IgG: cannot explain it
        change(req)
        _entries(req, "medicationAdministrations")[-1]["resource"]["effectiveDateTime"] = (
            "2025-08-01"
        )

    assert _finding(_run(client, later), "secondary-causes-excluded")["status"] == "insufficient"


def test_positive_hiv_test_is_not_met(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _resource(req, "labs", "-hiv-1")["valueCodeableConcept"] = {
            "coding": [{"system": SNOMED, "code": "10828004", "display": "Positive"}]
        }

    assert _finding(_run(client, change), "secondary-causes-excluded")["status"] == "not-met"


def test_lab_reference_low_is_preferred_to_the_age_table(client: TestClient) -> None:
    """650 mg/dL is below the adult table limit (700) but not below this lab's own 600."""

    def change(req: dict[str, Any]) -> None:
        igg = _resource(req, "observations", "-igg-baseline")
        igg["valueQuantity"]["value"] = 650
        igg["referenceRange"][0]["low"]["value"] = 600

    found = _finding(_run(client, change), "baseline-igg")
    assert found["status"] == "not-met"
    assert "lab's lower reference limit (600 mg/dL)" in found["reason"]


def test_age_table_applies_without_a_lab_range(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        igg = _resource(req, "observations", "-igg-baseline")
        igg["valueQuantity"]["value"] = 650
        del igg["referenceRange"]

    found = _finding(_run(client, change), "baseline-igg")
    assert found["status"] == "met"
    # the Medscape bands were re-read and match (issue 10): no longer marked unverified
    assert "lower limit for age in the reference table (700 mg/dL" in found["reason"]


def test_normal_looking_igg_without_age_or_lab_range_is_insufficient(client: TestClient) -> None:
    """650 mg/dL: not < 500, and the 2 SD arm needs the age (or the lab's own range)."""

    def change(req: dict[str, Any]) -> None:
        igg = _resource(req, "observations", "-igg-baseline")
        igg["valueQuantity"]["value"] = 650
        del igg["referenceRange"]
        del req["prefetch"]["patient"]["birthDate"]

    found = _finding(_run(client, change), "baseline-igg")
    assert found["status"] == "insufficient"
    assert "limit for age cannot be checked" in found["reason"]


@pytest.mark.parametrize(("unit", "usable"), [("g/dL", False), ("mg/mL", True)])
def test_igg_units_follow_the_contract(client: TestClient, unit: str, usable: bool) -> None:
    def change(req: dict[str, Any]) -> None:
        q = _resource(req, "observations", "-igg-baseline")["valueQuantity"]
        q.update(value=3.8, unit=unit, code=unit)
        del _resource(req, "observations", "-igg-baseline")["referenceRange"]

    det = _run(client, change)
    assert (det["labs"][0]["valueMgDl"] == 380) is usable
    assert (_finding(det, "baseline-igg")["status"] == "met") is usable


def test_unknown_age_decides_vaccine_response_only_when_bands_agree(client: TestClient) -> None:
    """9 of 14 protective (64%): impaired for age >= 6 (< 70%) but not for age < 6 (< 50%)."""

    def change(req: dict[str, Any]) -> None:
        del req["prefetch"]["patient"]["birthDate"]
        low = [
            e["resource"]
            for e in _titers(req)
            if "-spn-" in e["resource"]["id"] and e["resource"]["valueQuantity"]["value"] < 1.3
        ]
        assert len(low) == 11  # the base has 3 of 14 protective
        for res in low[:6]:
            res["valueQuantity"]["value"] = 2.0

    found = _finding(_run(client, change), "vaccine-response")
    assert found["status"] == "insufficient"
    assert "9 of 14" in found["reason"]
    assert "age is not recorded" in found["reason"]


def test_unknown_age_with_clearly_impaired_response_is_met(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        del req["prefetch"]["patient"]["birthDate"]

    assert _finding(_run(client, change), "vaccine-response")["status"] == "met"


def test_titers_not_in_ug_per_ml_are_not_interpreted(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        for e in _titers(req):
            if "-spn-" in e["resource"]["id"]:
                e["resource"]["valueQuantity"].update(unit="[IU]/mL", code="[IU]/mL")

    found = _finding(_run(client, change), "vaccine-response")
    assert found["status"] == "insufficient"
    assert "[IU]/mL" in found["reason"]


def _order(req: dict[str, Any]) -> dict[str, Any]:
    order: dict[str, Any] = req["context"]["draftOrders"]["entry"][0]["resource"]
    return order


def test_ml_dose_of_a_product_with_several_strengths_is_not_guessed(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        order = _order(req)
        order["medicationCodeableConcept"] = {"text": "Gammaplex immune globulin IV"}
        dose = order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
        dose.update(value=350, unit="mL", code="mL")

    det = _run(client, change)
    found = _finding(det, "dose")
    assert found["status"] == "insufficient"
    assert "more than one strength" in found["reason"]
    assert det["dose"]["gramsPerDose"] is None


def test_octagam_10_is_flagged_as_not_labelled_for_pi(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _order(req)["medicationCodeableConcept"] = {"text": "Octagam 10% immune globulin"}

    found = _finding(_run(client, change), "dose")
    assert "not labelled for primary immunodeficiency" in found["reason"]


def test_ig_by_rxnorm_and_hcpcs_codes(client: TestClient) -> None:
    for system, code in (
        (RXNORM, "1813423"),
        ("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "J1569"),
    ):

        def change(req: dict[str, Any], system: str = system, code: str = code) -> None:
            _order(req)["medicationCodeableConcept"] = {
                "coding": [{"system": system, "code": code}]
            }

        det = _run(client, change)
        assert det["dose"]["gramsPerDose"] == 35


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


def test_undated_rituximab_leaves_the_drug_exclusion_open(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(
            req,
            "medicationStatements",
            {
                "resourceType": "MedicationStatement",
                "id": "rtx-undated",
                "status": "completed",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": "121191", "display": "rituximab"}]
                },
                "subject": {"reference": f"Patient/{PID}"},
            },
        )

    found = _finding(_run(client, change), "secondary-causes-excluded")
    assert found["status"] == "insufficient"
    assert "without a date" in found["reason"]
    assert "MedicationStatement/rtx-undated" in found["evidence"]


def test_a_single_infection_is_not_recurrent(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        entries = _entries(req, "conditions")
        entries[:] = [e for e in entries if not e["resource"]["id"].endswith(("-2", "-3"))]

    found = _finding(_run(client, change), "infection-history")
    assert found["status"] == "insufficient"
    assert "look-back: 1;" in found["reason"]
    assert "at least 2" in found["reason"]


def test_infection_encounters_count_once_per_day(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        entries = _entries(req, "conditions")
        entries[:] = [e for e in entries if not e["resource"]["id"].endswith(("-2", "-3"))]
        first = entries[-1]["resource"]["onsetDateTime"]
        for i, day in enumerate((first, "2025-04-02")):
            _add(
                req,
                "encounters",
                {
                    "resourceType": "Encounter",
                    "id": f"enc-{i}",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": f"Patient/{PID}"},
                    "period": {"start": day},
                    "reasonCode": [{"coding": [{"system": ICD, "code": "J01.90"}]}],
                },
            )

    found = _finding(_run(client, change), "infection-history")
    assert found["status"] == "met"
    assert found["evidence"][-1] == "Encounter/enc-1"
    assert "Encounter/enc-0" not in found["evidence"]  # same day as the Condition
