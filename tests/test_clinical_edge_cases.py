"""Edge cases of real-world records found by an independent clinical review of the issue-10 work:
each is one change to a golden scenario that gave a wrong denial, approval or reason."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY, FIXTURES, load_json
from tests.test_rule_variants import (
    ICD,
    PID,
    RXNORM,
    SNOMED,
    _add,
    _condition,
    _entries,
    _finding,
    _resource,
    _run,
    _titers,
)

SC = "secondary-causes-excluded"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
URL = "/cds-services/ivig-order-sign"
CONTINUATION = load_json(FIXTURES / "continuation-dated" / "order-sign-request.json")
SCIG = load_json(FIXTURES / "scig-weekly-ml" / "order-sign-request.json")


def _continuation(client: TestClient, change: Any) -> dict[str, Any]:
    req = copy.deepcopy(CONTINUATION)
    change(req)
    response = client.post(URL, json=req)
    assert response.status_code == 200, response.text
    det: dict[str, Any] = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
    return det


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


# 5 ----------------------------------------------------------------------------------------------
def test_prior_conjugate_vaccine_makes_a_normal_ppsv23_response_uninterpretable(
    client: TestClient,
) -> None:
    """PCV20 on 2024-01-15, PPSV23 on 2025-06-02, all 14 titers 3.0 ug/mL: 13 of the 14 serotypes
    are in PCV20, so their titers do not show a polysaccharide response (Hansen 2021 Table 2:
    prior conjugate vaccine non-compliant). Not a documented normal response."""

    def change(req: dict[str, Any]) -> None:
        for e in _titers(req):
            e["resource"]["valueQuantity"]["value"] = 3.0
        _add(
            req,
            "immunizations",
            {
                "resourceType": "Immunization",
                "id": "pcv20",
                "status": "completed",
                "vaccineCode": {"coding": [{"system": CVX, "code": "216"}]},
                "patient": {"reference": f"Patient/{PID}"},
                "occurrenceDateTime": "2024-01-15",
            },
        )

    det = _run(client, change)
    assert _finding(det, "vaccine-response")["status"] != "not-met"
    assert det["outcome"] != "does-not-meet-criteria"


# 6 ----------------------------------------------------------------------------------------------
def test_a_later_ppsv23_does_not_hide_the_response_already_measured(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _add(
            req,
            "immunizations",
            {
                "resourceType": "Immunization",
                "id": "ppsv23-again",
                "status": "completed",
                "vaccineCode": {"coding": [{"system": CVX, "code": "33"}]},
                "patient": {"reference": f"Patient/{PID}"},
                "occurrenceDateTime": "2025-09-01",
            },
        )

    found = _finding(_run(client, change), "vaccine-response")
    assert found["status"] == "met", found


def test_a_month_only_vaccine_date_cannot_place_titers_in_the_window(client: TestClient) -> None:
    """PPSV23 '2025-06' and titers 2025-07-10: 10 to 39 days, possibly before week 4."""

    def change(req: dict[str, Any]) -> None:
        _resource(req, "immunizations", "-ppsv23-1")["occurrenceDateTime"] = "2025-06"

    found = _finding(_run(client, change), "vaccine-response")
    assert found["status"] == "insufficient", found


# 7 ----------------------------------------------------------------------------------------------
def test_scig_level_two_days_after_a_weekly_dose_is_a_steady_state_trough(
    client: TestClient,
) -> None:
    def change(req: dict[str, Any]) -> None:
        pid = req["context"]["patientId"]
        draft = copy.deepcopy(SCIG["context"]["draftOrders"])
        draft["entry"][0]["resource"]["subject"]["reference"] = f"Patient/{pid}"
        req["context"]["draftOrders"] = draft
        admins = _entries(req, "medicationAdministrations")
        admins.clear()
        day = dt.date(2025, 1, 6)  # weekly home SCIG every Monday
        while day < dt.date(2025, 11, 20):
            admins.append(
                {
                    "resource": {
                        "resourceType": "MedicationAdministration",
                        "id": f"hz-{day.isoformat()}",
                        "status": "completed",
                        "medicationCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/sid/ndc",
                                    "code": "44206-454",
                                    "display": "Hizentra 20% 50 mL",
                                }
                            ]
                        },
                        "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": day.isoformat(),
                    }
                }
            )
            day += dt.timedelta(days=7)

    found = _finding(_continuation(client, change), "trough-monitoring")
    assert found["status"] == "met", found  # IgG 820 mg/dL on Wed 2025-10-01


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


# 12 ---------------------------------------------------------------------------------------------
def test_a_loading_dose_is_not_read_as_the_maintenance_dose(client: TestClient) -> None:
    """1 g/kg once, then 0.5 g/kg every 4 weeks: the maintenance dose is 500 mg/kg per 4 weeks."""

    def change(req: dict[str, Any]) -> None:
        order = req["context"]["draftOrders"]["entry"][0]["resource"]
        route = order["dosageInstruction"][0]["route"]

        def per_kg(v: float) -> list[dict[str, Any]]:
            return [{"doseQuantity": {"value": v, "unit": "g/kg", "system": UCUM, "code": "g/kg"}}]

        order["dosageInstruction"] = [
            {
                "sequence": 1,
                "timing": {"repeat": {"count": 1}},
                "route": route,
                "doseAndRate": per_kg(1),
            },
            {
                "sequence": 2,
                "timing": {"repeat": {"frequency": 1, "period": 4, "periodUnit": "wk"}},
                "route": route,
                "doseAndRate": per_kg(0.5),
            },
        ]

    det = _run(client, change)
    assert _finding(det, "dose")["status"] != "not-met", _finding(det, "dose")
    assert det["outcome"] != "does-not-meet-criteria"


# 14 ---------------------------------------------------------------------------------------------
def test_unspecified_bronchitis_counts_the_same_in_icd_and_snomed(client: TestClient) -> None:
    """Two episodes of 'acute bronchitis, unspecified' (J20.9 / SNOMED 10509002) and of
    'bronchitis' (J40 / SNOMED 32398004): the SNOMED codes are rejected as 'viral or not shown
    bacterial'; the ICD-10-CM codes for the same concepts must not prove bacterial infection."""
    statuses = {}
    for system, code in ((ICD, "J20.9"), (SNOMED, "10509002"), (ICD, "J40"), (SNOMED, "32398004")):

        def change(req: dict[str, Any], s: str = system, c: str = code) -> None:
            conditions = _entries(req, "conditions")
            conditions[:] = [e for e in conditions if "infection" not in e["resource"]["id"]]
            for i, day in enumerate(("2024-03-04", "2024-09-10")):
                cond = _condition(f"bronchitis-{i}", s, c)
                cond["onsetDateTime"] = day
                conditions.append({"resource": cond})

        statuses[code] = _finding(_run(client, change), "infection-history")["status"]
    assert set(statuses.values()) == {"insufficient"}, statuses
