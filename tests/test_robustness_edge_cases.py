"""Robustness edge cases (independent review of the issue-10 work): inputs that crashed, hung, or
made a criterion met on data that could not be read."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY, FIXTURES, load_json
from tests.test_rule_variants import BASE, _finding, _run

URL = "/cds-services/ivig-order-sign"
BURST = load_json(FIXTURES / "prednisone-burst" / "order-sign-request.json")
PANELS = load_json(FIXTURES / "lab-panels" / "order-sign-request.json")
SC = "secondary-causes-excluded"
VR = "vaccine-response"


def _draft(req: dict[str, Any]) -> dict[str, Any]:
    order: dict[str, Any] = req["context"]["draftOrders"]["entry"][0]["resource"]
    return order


def _repeat(req: dict[str, Any]) -> dict[str, Any]:
    rep: dict[str, Any] = _draft(req)["dosageInstruction"][0]["timing"]["repeat"]
    return rep


def _daily(req: dict[str, Any]) -> dict[str, Any]:
    """The base order (35 g, 70 kg) given daily: 14000 mg/kg per 4 weeks as an open repeat."""
    rep = _repeat(req)
    rep.update(frequency=1, period=1, periodUnit="d")
    return rep


def _det(client: TestClient, req: dict[str, Any]) -> dict[str, Any]:
    response = client.post(URL, json=req)
    assert response.status_code == 200, response.text
    det: dict[str, Any] = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
    return det


# -- 1. 500: a course bound that overflows to infinity ---------------------------------------


def test_course_bound_that_overflows_is_not_a_500(client: TestClient) -> None:
    """1e308 months is inf days; int(inf / interval) raised OverflowError in _course_doses."""
    req = copy.deepcopy(BASE)
    _repeat(req)["boundsDuration"] = {"value": 1e308, "unit": "mo", "code": "mo"}
    response = client.post(URL, json=req)  # today: OverflowError propagates (500)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        det = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
        assert _finding(det, "dose")["status"] != "met"


# -- 2. CPU: the serotype text pattern is quadratic in whitespace ------------------------------


def test_long_whitespace_in_a_panel_component_text_is_cheap(client: TestClient) -> None:
    """`\\s*[:#-]?\\s*` backtracks O(n^2): ~20 s for a 40 KB body today, hours for 1 MB."""
    req = copy.deepcopy(PANELS)
    for entry in req["prefetch"]["titers"]["entry"]:
        if entry["resource"]["id"] == "lab-panels-pn23-panel-1":
            entry["resource"]["component"][0]["code"] = {"text": "type" + " " * 20_000 + "x"}
    start = time.perf_counter()
    response = client.post(URL, json=req)
    assert response.status_code == 200
    assert time.perf_counter() - start < 2.0


# -- 3. A non-positive or reversed course bound is read as a one-dose course ------------------


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


# -- 4. Steroid course length: only the first dosage is read; nonsense lengths are a burst -----


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


# -- 5. Response window with partial dates --------------------------------------------------


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


# -- 6. Unreadable titers drop out of the denominator -----------------------------------------


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


# -- 7. Policy numbers that divide by zero load without complaint ------------------------------

import pytest  # noqa: E402

from cds_service import knowledge  # noqa: E402
from tests.unit.knowledge.test_policy import _copy_with  # noqa: E402


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    min_serotypes: 4", "    min_serotypes: 0"),  # share = protective / 0
        ("    on_therapy_min_months: 3", "    on_therapy_min_months: 0"),  # rate / 0 days
        ("    illustrative_weights_kg: [50, 70, 90]", "    illustrative_weights_kg: [0, 70, 90]"),
        (
            "    post_vaccine_window_days: {min: 28, max: 56}",
            "    post_vaccine_window_days: {min: -5, max: 56}",
        ),
    ],
)
def test_policy_numbers_that_divide_by_zero_stop_loading(tmp_path: Any, old: str, new: str) -> None:
    with pytest.raises(knowledge.KnowledgeError):
        knowledge.load(_copy_with(tmp_path, old, new))


# -- 8. Nephrotic-range urine protein in a unit spelling not in the table is silently ignored --

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
