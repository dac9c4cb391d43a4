"""Secondary causes on real-world records (issue 10): only what the source says causes
hypogammaglobulinemia, at the exposure it says. Each case is one change to the complete initial
scenario (which meets criteria); the policy parameters are in policy-cvid-ig.yaml
(secondary-causes-excluded) and the per-drug exposure rule in codes.yaml (causative-drugs)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from cds_service.domain import (
    Record,
    Status,
)
from cds_service.rules import registry as criteria
from tests.conftest import DETERMINATION_KEY, FIXTURES, load_json
from tests.support.facts import TODAY, _ctx, _kn
from tests.support.scenario import (
    ICD,
    PID,
    RXNORM,
    SNOMED,
    URL,
    _add,
    _condition,
    _entries,
    _finding,
    _resource,
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


def test_nephrotic_syndrome_on_the_problem_list_in_snomed_only_is_a_cause(
    client: TestClient,
) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("ns", SNOMED, "52254009")))
    assert _finding(det, "secondary-causes-excluded")["status"] == "not-met"
    assert det["outcome"] == "does-not-meet-criteria"


def test_snomed_cll_and_hiv_are_causes(client: TestClient) -> None:
    for code in ("277473004", "91947003"):
        det = _run(client, lambda r, c=code: _add(r, "conditions", _condition("x", SNOMED, c)))
        assert _finding(det, "secondary-causes-excluded")["status"] == "not-met", code


SC = "secondary-causes-excluded"
LOINC = "http://loinc.org"


def _med(rtype: str, rid: str, code: str, name: str, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": rtype,
        "id": rid,
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": name}],
            "text": name,
        },
        "subject": {"reference": f"Patient/{PID}"},
    }
    if rtype == "MedicationRequest":
        res["intent"] = "order"
    res.update(extra)
    return res


def _obs(rid: str, code: str, value: float, unit: str, when: str, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    res.update(extra)
    return res


# 1 ----------------------------------------------------------------------------------------------
def test_rituximab_given_after_the_qualifying_low_igg_is_not_its_cause(client: TestClient) -> None:
    """Baseline IgG 380 mg/dL on 2025-05-01; rituximab first given 2025-08-15 for CVID-associated
    ITP. A drug given after the low IgG cannot have caused it: no denial."""

    def change(req: dict[str, Any]) -> None:
        _add(req, "conditions", _condition("itp", ICD, "D69.3"))
        _add(
            req,
            "medicationAdministrations",
            _med(
                "MedicationAdministration",
                "rtx-itp",
                "121191",
                "rituximab",
                effectiveDateTime="2025-08-15",
            ),
        )

    det = _run(client, change)
    assert _finding(det, SC)["status"] != "not-met", _finding(det, SC)
    assert det["outcome"] != "does-not-meet-criteria"


# 2 ----------------------------------------------------------------------------------------------
def test_a_proposed_or_stopped_anti_cd20_order_is_not_exposure(client: TestClient) -> None:
    """intent=proposal (never ordered, never given) and status=stopped (discontinued; no
    administration on record) do not document that the drug 'was given'."""
    for extra in ({"intent": "proposal", "status": "active"}, {"status": "stopped"}):
        order = _med("MedicationRequest", "ocr", "1876366", "ocrelizumab", authoredOn="2025-11-01")
        order.update(extra)
        det = _run(client, lambda r, o=order: _add(r, "medicationRequests", o))
        assert _finding(det, SC)["status"] != "not-met", (extra, _finding(det, SC))


# 3 ----------------------------------------------------------------------------------------------
def _dosage(mg: float, days: int, seq: int) -> dict[str, Any]:
    return {
        "sequence": seq,
        "text": f"prednisone {mg:g} mg daily x {days} days",
        "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]},
        "timing": {
            "repeat": {
                "frequency": 1,
                "period": 1,
                "periodUnit": "d",
                "boundsDuration": {"value": days, "unit": "days", "system": UCUM, "code": "d"},
            }
        },
        "doseAndRate": [
            {"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}
        ],
    }


def test_a_six_week_prednisone_taper_is_not_a_burst(client: TestClient) -> None:
    taper = _med(
        "MedicationRequest",
        "taper",
        "8640",
        "prednisone",
        authoredOn="2025-08-01",
        dosageInstruction=[_dosage(mg, 7, i + 1) for i, mg in enumerate([60, 50, 40, 30, 20, 10])],
    )
    found = _finding(_run(client, lambda r: _add(r, "medicationRequests", taper)), SC)
    assert found["status"] == "insufficient", found  # 42 days > 14-day burst: review
    assert "MedicationRequest/taper" in found["evidence"]


def test_chronic_prednisone_with_refills_is_not_a_burst(client: TestClient) -> None:
    """10 mg daily, 14-day supply, 11 refills: 168 days, not a 14-day burst."""
    order = _med(
        "MedicationRequest",
        "pred-chronic",
        "8640",
        "prednisone",
        authoredOn="2025-01-10",
        dosageInstruction=[_dosage(10, 14, 1)],
        dispenseRequest={
            "numberOfRepeatsAllowed": 11,
            "expectedSupplyDuration": {"value": 14, "unit": "days", "system": UCUM, "code": "d"},
        },
    )
    del order["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]
    found = _finding(_run(client, lambda r: _add(r, "medicationRequests", order)), SC)
    assert found["status"] == "insufficient", found


def test_thirty_daily_iv_methylprednisolone_administrations_are_a_course(
    client: TestClient,
) -> None:
    def change(req: dict[str, Any]) -> None:
        for i in range(30):
            day = (dt.date(2025, 8, 1) + dt.timedelta(days=i)).isoformat()
            _add(
                req,
                "medicationAdministrations",
                _med(
                    "MedicationAdministration",
                    f"mp-{i}",
                    "6902",
                    "methylprednisolone",
                    effectiveDateTime=day,
                ),
            )

    found = _finding(_run(client, change), SC)
    assert found["status"] == "insufficient", found


# 4 ----------------------------------------------------------------------------------------------
def test_rituximab_course_running_into_the_look_back_counts(client: TestClient) -> None:
    """Order authored 2024-05-01 (before the 12-month look-back), 1000 mg every 6 months with
    boundsPeriod to 2025-11-01, status completed: doses fell inside the look-back."""
    order = _med(
        "MedicationRequest",
        "rtx-maint",
        "121191",
        "rituximab",
        authoredOn="2024-05-01",
        dosageInstruction=[
            {
                "timing": {
                    "repeat": {
                        "frequency": 1,
                        "period": 6,
                        "periodUnit": "mo",
                        "boundsPeriod": {"start": "2024-05-01", "end": "2025-11-01"},
                    }
                },
                "doseAndRate": [
                    {"doseQuantity": {"value": 1000, "unit": "mg", "system": UCUM, "code": "mg"}}
                ],
            }
        ],
    )
    found = _finding(_run(client, lambda r: _add(r, "medicationRequests", order)), SC)
    assert found["status"] != "met", found


# 9 ----------------------------------------------------------------------------------------------
def test_same_day_discordant_hiv_results_do_not_depend_on_resource_ids(client: TestClient) -> None:
    """Reactive Ag/Ab screen and negative supplemental antibody test on the same specimen: the
    CDC algorithm needs an HIV-1 NAT. Neither a denial nor an exclusion, whatever the ids."""
    positive = {"coding": [{"system": SNOMED, "code": "10828004", "display": "Positive"}]}
    outcomes = set()
    for screen_id, diff_id in (("a-screen", "z-diff"), ("z-screen", "a-diff")):

        def change(req: dict[str, Any], s: str = screen_id, d: str = diff_id) -> None:
            neg = _resource(req, "labs", "-hiv-1")
            neg["id"] = d
            neg["code"] = {"coding": [{"system": LOINC, "code": "89365-1"}]}
            screen = copy.deepcopy(neg)
            screen.update(id=s, code={"coding": [{"system": LOINC, "code": "56888-1"}]})
            screen["valueCodeableConcept"] = positive
            _add(req, "labs", screen)

        outcomes.add(_finding(_run(client, change), SC)["status"])
    assert outcomes == {"insufficient"}, outcomes


# 10 ---------------------------------------------------------------------------------------------
def test_elevated_stool_a1at_without_a_flag_is_read_against_its_range(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(req, "conditions", _condition("crohn", ICD, "K50.90"))
        _add(
            req,
            "labs",
            _obs(
                "a1at",
                "9407-8",
                180,
                "mg/dL",
                "2025-10-01",
                referenceRange=[
                    {"high": {"value": 54, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}}
                ],
            ),
        )
        _add(req, "labs", _obs("alb", "1751-7", 3.6, "g/dL", "2025-10-01"))

    found = _finding(_run(client, change), SC)
    assert found["status"] == "insufficient", found  # protein-losing enteropathy shown: review


# 11 ---------------------------------------------------------------------------------------------
def test_low_albumin_with_a_normal_stool_a1at_does_not_ask_for_the_a1at(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(req, "conditions", _condition("crohn", ICD, "K50.90"))
        normal = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/"
                        "v3-ObservationInterpretation",
                        "code": "N",
                    }
                ]
            }
        ]
        _add(req, "labs", _obs("a1at", "9407-8", 20, "mg/dL", "2025-10-01", interpretation=normal))
        _add(req, "labs", _obs("alb", "1751-7", 3.2, "g/dL", "2025-10-01"))

    found = _finding(_run(client, change), SC)
    assert not any("alpha-1-antitrypsin" in m for m in found["missing"]), found
    assert found["status"] == "met", found


BURST = load_json(FIXTURES / "prednisone-burst" / "order-sign-request.json")
SC = "secondary-causes-excluded"


def _det(client: TestClient, req: dict[str, Any]) -> dict[str, Any]:
    response = client.post(URL, json=req)
    assert response.status_code == 200, response.text
    det: dict[str, Any] = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
    return det


def _prednisone(req: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = req["prefetch"]["medicationRequests"]["entry"][0]["resource"]
    return res


def _burst_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    req = copy.deepcopy(BURST)
    change(_prednisone(req))
    return req


def test_a_taper_in_several_dosage_instructions_is_not_a_burst(client: TestClient) -> None:
    """40/30/20/10 mg, 5 days each (sequence 1..4): 20 days, beyond the 14-day burst."""

    def taper(res: dict[str, Any]) -> None:
        first = res["dosageInstruction"][0]
        steps = []
        for seq, mg in enumerate((40, 30, 20, 10), start=1):
            step = copy.deepcopy(first)
            step["sequence"] = seq
            step["doseAndRate"][0]["doseQuantity"]["value"] = mg
            steps.append(step)
        res["dosageInstruction"] = steps

    assert _finding(_det(client, _burst_with(taper)), SC)["status"] == "insufficient"


def test_a_negative_or_zero_course_length_is_not_a_burst(client: TestClient) -> None:
    def rep(res: dict[str, Any]) -> dict[str, Any]:
        r: dict[str, Any] = res["dosageInstruction"][0]["timing"]["repeat"]
        return r

    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda res: rep(res)["boundsDuration"].update(value=-60),
        lambda res: rep(res)["boundsDuration"].update(value=0),
        lambda res: (
            rep(res).pop("boundsDuration"),
            rep(res).update(boundsPeriod={"start": "2025-09-15", "end": "2025-03-15"}),
        ),
        lambda res: (rep(res).pop("boundsDuration"), rep(res).update(count=60, period=-1)),
        lambda res: (
            rep(res).pop("boundsDuration"),
            res.update(dispenseRequest={"expectedSupplyDuration": {"value": -90, "code": "d"}}),
        ),
    ]
    for change in changes:
        assert _finding(_det(client, _burst_with(change)), SC)["status"] == "insufficient"


def test_a_long_course_with_a_nasal_first_dosage_still_counts(client: TestClient) -> None:
    def change(res: dict[str, Any]) -> None:
        res["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"] = 60
        nasal = "Nasal route"
        route = {
            "coding": [{"system": "http://snomed.info/sct", "code": "46713006", "display": nasal}]
        }
        res["dosageInstruction"].insert(0, {"sequence": 1, "route": route})

    assert _finding(_det(client, _burst_with(change)), SC)["status"] == "insufficient"


CROHNS = load_json(FIXTURES / "crohns-without-albumin" / "order-sign-request.json")


def _lab(rid: str, code: str, value: float, unit: str) -> dict[str, Any]:
    pid = CROHNS["context"]["patientId"]
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2025-10-15",
        "valueQuantity": {"value": value, "unit": unit},
    }


def test_urine_protein_in_an_unknown_unit_does_not_let_albumin_clear_protein_loss(
    client: TestClient,
) -> None:
    """Crohn's; albumin 4.0 g/dL (would clear); 24 h urine protein 5 g reported as 'g/24hr':
    unreadable, so protein loss is not excluded (with 'g/(24.h)' the same value is a gap)."""
    req = copy.deepcopy(CROHNS)
    req["prefetch"]["labs"]["entry"] += [
        {"resource": _lab("alb", "1751-7", 4.0, "g/dL")},
        {"resource": _lab("up", "2889-4", 5, "g/24hr")},
    ]
    assert _finding(_det(client, req), SC)["status"] == "insufficient"


def test_ongoing_causative_drug_started_long_ago_is_a_secondary_cause() -> None:
    """An active MedicationStatement for carbamazepine started in 2020 and still taken: the drug
    is being given now, within the 12-month look-back. Its start date must not hide it.
    (Carbamazepine is an association the source supports only as a review, so the finding asks
    for that review rather than denying: issue 10.)"""
    from cds_service.record import RecordBuilder

    statement = {
        "resourceType": "MedicationStatement",
        "id": "cbz",
        "status": "active",
        "medicationCodeableConcept": {"text": "Carbamazepine 200 mg tablet"},
        "subject": {"reference": "Patient/p"},
        "effectivePeriod": {"start": "2020-05-01"},
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([statement], None)
    assert [d.ref for d in rec.drugs] == ["MedicationStatement/cbz"]
    finding = criteria.secondary_causes(_ctx(rec))
    assert finding.status is Status.INSUFFICIENT
    assert "MedicationStatement/cbz" in finding.evidence
    assert any("review of carbamazepine" in m for m in finding.missing)
    # a course that ended more than 12 months ago is not
    statement["status"] = "completed"
    statement["effectivePeriod"] = {"start": "2020-05-01", "end": "2023-01-01"}
    rec = RecordBuilder(_kn(), "p", TODAY).build([statement], None)
    finding = criteria.secondary_causes(_ctx(rec))
    assert finding.status is not Status.NOT_MET
    assert "MedicationStatement/cbz" not in finding.evidence


def test_unreadable_condition_or_medication_never_lets_secondary_causes_be_met(
    client: TestClient,
) -> None:
    """The complete initial scenario meets criteria. Add an active CLL Condition (a malignancy,
    i.e. a secondary cause) whose onset is malformed: it cannot be read, so it is a DataIssue, but
    the exclusion of secondary causes must not then be 'met' as if it were not on record."""
    from tests.support.scenario import _add, _condition, _finding, _run

    def change(req: dict[str, Any]) -> None:
        cll = _condition("cll-dx", ICD, "C91.10")
        cll["onsetDateTime"] = "2025-13-45"
        _add(req, "conditions", cll)

    det = _run(client, change)
    finding = _finding(det, "secondary-causes-excluded")
    assert finding["status"] == "insufficient"
    assert "Condition/cll-dx" in finding["evidence"]
    assert det["outcome"] != "meets-criteria"


def test_causative_drug_with_a_partial_date_overlapping_the_lookback_is_not_excluded() -> None:
    """Rituximab dated only '2025' on an order of 2026-01-15: it may have been given in December
    2025, inside the 12-month look-back. The exclusion cannot be met on that."""
    from cds_service.domain import DrugExposure
    from cds_service.fhir.models import to_when

    drug = DrugExposure("MedicationStatement/r", (), "rituximab", to_when("2025"))
    rec = Record(patient=None, orders=[], drugs=[drug], today=TODAY)
    finding = criteria.secondary_causes(_ctx(rec))
    assert finding.status is not Status.MET
    assert "MedicationStatement/r" in finding.evidence
    assert "rituximab" in finding.reason
