"""Orders as EHRs send them, and clinical response as rates (issue 10): an order coded only in
RxNorm is recognised; weight-based and course-limited doses are computed as ordered; clinical
response compares infections per year over comparable periods, not lifetime counts."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.test_clinical_edge_cases import _continuation
from tests.test_rule_variants import ICD, RXNORM, _condition, _finding, _run

URL = "/cds-services/ivig-order-sign"
UCUM = "http://unitsofmeasure.org"


def _draft(req: dict[str, Any]) -> dict[str, Any]:
    draft: dict[str, Any] = req["context"]["draftOrders"]["entry"][0]["resource"]
    return draft


def _rxnorm_only(code: str) -> Any:
    def change(req: dict[str, Any]) -> None:
        _draft(req)["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": code}]}

    return change


def test_an_order_coded_only_by_its_rxnorm_sbd_is_recognised(client: TestClient) -> None:
    det = _run(client, _rxnorm_only("1809518"))  # immunoglobulin G 100 MG/ML Injection [Privigen]
    assert det["outcome"] == "meets-criteria"
    assert _finding(det, "dose")["status"] == "met"


def test_an_order_coded_only_by_a_generic_rxnorm_clinical_drug_is_recognised(
    client: TestClient,
) -> None:
    det = _run(client, _rxnorm_only("1809417"))  # immunoglobulin G, human 100 MG/ML Injection
    assert _finding(det, "dose")["status"] == "met"


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
