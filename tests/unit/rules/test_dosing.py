"""The dose check (dosing.py): the policy's mg/kg range for the ordered product and route."""

from __future__ import annotations

from cds_service.domain import (
    Status,
    When,
)
from cds_service.rules import dosing
from tests.support.facts import TODAY, _kn


def test_facilitated_scig_is_held_to_the_ivig_range() -> None:
    """HyQvia (conversion factor 1.0) is given at the IVIG monthly dose every 3-4 weeks; the SCIG
    100-200 mg/kg/week range (Orange 2011 Table 8) is for conventional SCIG. 50 g every 28 days
    at 70 kg is 714 mg/kg per 4 weeks: above the policy's 400-600, not within 400-800."""
    from cds_service.domain import DraftOrder, Measurement

    loinc = "http://loinc.org"
    weight = Measurement("Observation/w", ((loinc, "29463-7"),), When(TODAY), 70.0, "kg")
    order = DraftOrder(
        "MedicationRequest/h", "HyQvia", "SC", 50.0, 28.0, When(TODAY), None, product_id="hyqvia"
    )
    check = dosing.check(order, [weight], _kn(), TODAY)
    assert (check.low, check.high) == (400.0, 600.0)
    assert check.status is Status.NOT_MET
