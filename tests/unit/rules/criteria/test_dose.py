"""The dose criterion: the ordered dose read as ordered and checked against the policy's range."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from cds_service import wording
from cds_service.domain import (
    Record,
    Status,
    When,
)
from tests.conftest import DETERMINATION_KEY
from tests.support.facts import TODAY, _kn
from tests.support.scenario import (
    BASE,
    URL,
    _draft,
    _finding,
    _order,
    _run,
)


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


UCUM = "http://unitsofmeasure.org"


def _dose(value: float, unit: str, **repeat: Any) -> Any:
    def change(req: dict[str, Any]) -> None:
        di = _draft(req)["dosageInstruction"][0]
        di["doseAndRate"][0]["doseQuantity"] = {
            "value": value,
            "unit": unit,
            "system": UCUM,
            "code": unit,
        }
        if repeat:
            di["timing"]["repeat"] = repeat

    return change


def test_a_weight_based_dose_uses_the_documented_weight(client: TestClient) -> None:
    det = _run(client, _dose(0.5, "g/kg"))  # every 4 weeks at 70 kg: 35 g, 500 mg/kg
    assert det["dose"]["gramsPerDose"] == 35.0
    assert det["dose"]["mgPerKgPer4Weeks"] == 500.0
    assert _finding(det, "dose")["status"] == "met"
    det = _run(client, _dose(400, "mg/kg"))
    assert det["dose"]["mgPerKgPer4Weeks"] == 400.0


def test_a_weight_based_dose_without_a_weight_is_insufficient(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        _dose(0.5, "g/kg")(req)
        obs = req["prefetch"]["observations"]["entry"]
        obs[:] = [e for e in obs if "weight" not in e["resource"]["id"]]

    det = _run(client, change)
    found = _finding(det, "dose")
    assert found["status"] == "insufficient"
    assert det["dose"]["mgPerKgPer4Weeks"] == 500.0
    assert "body weight" in found["missing"][0]


def test_a_course_limited_order_is_one_course_not_an_endless_repeat(client: TestClient) -> None:
    # 1 g/kg daily x 2 days (an ITP regimen): 2 g/kg in the course, not 28 g/kg per 4 weeks
    det = _run(client, _dose(1, "g/kg", frequency=1, period=1, periodUnit="d", count=2))
    assert det["dose"]["mgPerKgPer4Weeks"] == 2000.0
    assert _finding(det, "dose")["status"] == "not-met"
    det = _run(
        client,
        _dose(
            35,
            "g",
            frequency=1,
            period=1,
            periodUnit="d",
            boundsDuration={"value": 1, "unit": "day", "system": UCUM, "code": "d"},
        ),
    )
    assert det["dose"]["mgPerKgPer4Weeks"] == 500.0


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


def _repeat(req: dict[str, Any]) -> dict[str, Any]:
    rep: dict[str, Any] = _draft(req)["dosageInstruction"][0]["timing"]["repeat"]
    return rep


def _daily(req: dict[str, Any]) -> dict[str, Any]:
    """The base order (35 g, 70 kg) given daily: 14000 mg/kg per 4 weeks as an open repeat."""
    rep = _repeat(req)
    rep.update(frequency=1, period=1, periodUnit="d")
    return rep


def test_course_bound_that_overflows_is_not_a_500(client: TestClient) -> None:
    """1e308 months is inf days; int(inf / interval) raised OverflowError in _course_doses."""
    req = copy.deepcopy(BASE)
    _repeat(req)["boundsDuration"] = {"value": 1e308, "unit": "mo", "code": "mo"}
    response = client.post(URL, json=req)  # today: OverflowError propagates (500)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        det = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
        assert _finding(det, "dose")["status"] != "met"


def _bounded(bounds: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(req: dict[str, Any]) -> None:
        _daily(req).update(bounds)

    return change


def test_daily_order_is_too_high_without_bounds(client: TestClient) -> None:  # holds today
    assert _finding(_run(client, _bounded({})), "dose")["status"] == "not-met"


def test_negative_zero_or_reversed_bounds_do_not_make_a_daily_dose_met(
    client: TestClient,
) -> None:
    for bounds in (
        {"boundsDuration": {"value": -5, "unit": "d", "code": "d"}},
        {"boundsDuration": {"value": 0, "unit": "d", "code": "d"}},
        {"boundsPeriod": {"start": "2025-12-01", "end": "2025-01-01"}},
    ):
        found = _finding(_run(client, _bounded(bounds)), "dose")
        assert found["status"] != "met", (bounds, found["reason"])


def test_a_second_ig_draft_order_is_not_silently_ignored_by_the_dose_check() -> None:
    """Two IG orders signed together (IVIG 30 g q4w and SCIG 10 g weekly, 70 kg): the first alone
    is 429 mg/kg per 4 weeks (in range), but 70 g per 4 weeks more is given. The dose is not
    confirmed within range on the first order alone."""
    from cds_service.domain import DraftOrder, Measurement
    from cds_service.rules import determination

    loinc = "http://loinc.org"
    weight = Measurement("Observation/w", ((loinc, "29463-7"),), When(TODAY), 70.0, "kg")
    iv = DraftOrder("MedicationRequest/iv", "Privigen", "IV", 30.0, 28.0, When(TODAY), None)
    sc = DraftOrder("MedicationRequest/sc", "Hizentra", "SC", 10.0, 7.0, When(TODAY), None)
    rec = Record(patient=None, orders=[iv, sc], measurements=[weight], today=TODAY)
    det = determination.evaluate(rec, _kn(), wording.default())
    assert det is not None
    assert det.finding("dose").status is Status.INSUFFICIENT
    assert "MedicationRequest/sc" in det.finding("dose").evidence
    assert det.to_contract()["dose"]["status"] == "insufficient"
    # one order: unchanged
    det = determination.evaluate(
        Record(patient=None, orders=[iv], measurements=[weight], today=TODAY),
        _kn(),
        wording.default(),
    )
    assert det is not None
    assert det.finding("dose").status is Status.MET
