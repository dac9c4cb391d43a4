"""The age criterion: the minimum age proven from the recorded birth date."""

from __future__ import annotations

import datetime as dt

from cds_service.domain import (
    Record,
    Status,
)
from cds_service.rules import registry as criteria
from tests.support.facts import _ctx


def test_birth_year_only_does_not_prove_the_minimum_age() -> None:
    """Born '2024' and evaluated on 2026-06-01: 2 years old if born in January, 1 if born in
    December. The age rule (>= 2) cannot be met on that; it is insufficient, not met."""
    from cds_service.domain import PatientFact
    from cds_service.fhir.models import to_when

    born = to_when("2024")
    assert born is not None
    patient = PatientFact("Patient/p", born.date, None, born.end)
    rec = Record(patient=patient, orders=[], today=dt.date(2026, 6, 1))
    assert criteria.age(_ctx(rec)).status is Status.INSUFFICIENT
    rec = Record(patient=patient, orders=[], today=dt.date(2027, 1, 1))
    assert criteria.age(_ctx(rec)).status is Status.MET
    rec = Record(patient=patient, orders=[], today=dt.date(2025, 1, 1))
    assert criteria.age(_ctx(rec)).status is Status.NOT_MET
