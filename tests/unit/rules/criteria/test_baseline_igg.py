"""The baseline-IgG criterion: which IgG result is the baseline, read against which lower limit."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.domain import (
    IgGResult,
    Record,
    Status,
    When,
)
from cds_service.rules import registry as criteria
from tests.support.facts import TODAY, _admin, _ctx
from tests.support.scenario import (
    _finding,
    _resource,
    _run,
)


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


def test_undated_igg_reason_does_not_claim_it_was_drawn_on_treatment() -> None:
    """An initial request (no IG given) with an IgG lacking a date: the reason said the results
    'were drawn after IG therapy began on None'. It must say what is true: the date is missing."""
    lab = IgGResult("Observation/x", None, 380.0, "mg/dL")
    rec = Record(patient=None, orders=[], igg=[lab], today=TODAY)
    finding = criteria.baseline_igg(_ctx(rec))
    assert finding.status is Status.INSUFFICIENT
    assert "None" not in finding.reason
    assert "after IG therapy began" not in finding.reason
    # a continuation with a dated start: an undated result was not shown to be drawn after it
    rec = Record(
        patient=None,
        orders=[],
        igg=[lab],
        exposures=[_admin(When(dt.date(2025, 3, 15)))],
        today=TODAY,
    )
    assert "after IG therapy began" not in criteria.baseline_igg(_ctx(rec)).reason


def test_age_band_uses_completed_months() -> None:
    """Born 2015-03-20, IgG 650 mg/dL on 2025-03-10: 9 years 11 months (band 7-9 y, lower limit
    572), not 10 years (band 10-11 y, 698). 650 is neither < 500 nor <= 572: not met."""
    from cds_service.domain import PatientFact

    lab = IgGResult("Observation/x", When(dt.date(2025, 3, 10)), 650.0, "mg/dL")
    rec = Record(
        patient=PatientFact("Patient/p", dt.date(2015, 3, 20), None),
        orders=[],
        igg=[lab],
        today=TODAY,
    )
    assert criteria.baseline_igg(_ctx(rec)).status is Status.NOT_MET


def test_igg_without_a_value_is_not_called_a_unit_problem() -> None:
    """An IgG Observation with no value (dataAbsentReason, e.g. specimen haemolysed) was reported
    as 'units could not be converted (none)'. The reason must say there is no result value."""
    lab = IgGResult("Observation/x", When(dt.date(2025, 6, 1)), None, None, has_value=False)
    rec = Record(patient=None, orders=[], igg=[lab], today=TODAY)
    finding = criteria.baseline_igg(_ctx(rec))
    assert finding.status is Status.INSUFFICIENT
    assert "units" not in finding.reason
    assert "Observation/x" in finding.evidence
