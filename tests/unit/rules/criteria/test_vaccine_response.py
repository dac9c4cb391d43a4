"""The vaccine-response criterion: titers placed in the vaccination window, read in their units."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.scenario import (
    PID,
    _add,
    _finding,
    _resource,
    _run,
    _titers,
)


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


CVX = "http://hl7.org/fhir/sid/cvx"


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


VR = "vaccine-response"


def test_a_year_only_vaccine_date_does_not_place_titers_in_the_window(
    client: TestClient,
) -> None:
    """PPSV23 dated '2025' may be after titers drawn 2025-02-10: the window cannot be checked."""

    def change(req: dict[str, Any]) -> None:
        req["prefetch"]["immunizations"]["entry"][0]["resource"]["occurrenceDateTime"] = "2025"
        for key in ("titers", "titers2"):
            for entry in req["prefetch"][key]["entry"]:
                entry["resource"]["effectiveDateTime"] = "2025-02-10"

    assert _finding(_run(client, change), VR)["status"] != "met"


def test_a_month_only_titer_date_straddling_the_window_is_not_met(client: TestClient) -> None:
    """Vaccine 2025-06-02; titers '2025-07' are 29..59 days later (window 28..56)."""

    def change(req: dict[str, Any]) -> None:
        for key in ("titers", "titers2"):
            for entry in req["prefetch"][key]["entry"]:
                entry["resource"]["effectiveDateTime"] = "2025-07"

    assert _finding(_run(client, change), VR)["status"] != "met"


def test_unreadable_titers_do_not_make_an_impaired_response_met(client: TestClient) -> None:
    """8 of 14 titers reported '> 4.5' (valueString) or in ug/dL: 3 of the 6 readable are
    protective (50%, 'impaired'), but with the 8 the response may be 11 of 14 (79%, normal)."""
    for shape in ("string", "unit"):

        def change(req: dict[str, Any], shape: str = shape) -> None:
            titers = [
                e["resource"] for k in ("titers", "titers2") for e in req["prefetch"][k]["entry"]
            ]
            low = [t for t in titers if t["valueQuantity"]["value"] < 1.3][:8]
            for t in low:
                if shape == "string":
                    t.pop("valueQuantity")
                    t["valueString"] = "> 4.5"
                else:
                    t["valueQuantity"] = {"value": 450, "unit": "ug/dL", "code": "ug/dL"}

        assert _finding(_run(client, change), VR)["status"] != "met", shape
