"""determination.evaluate: a whole determination from a record (criteria, outcome, contract)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cds_service import wording
from cds_service.domain import (
    IgGResult,
    Record,
    When,
)
from tests.support.facts import TODAY, _admin, _kn
from tests.support.scenario import (
    _run,
)


def test_base_meets_criteria(client: TestClient) -> None:
    assert _run(client, lambda r: None)["outcome"] == "meets-criteria"


def test_partial_dates_are_not_reported_as_the_first_of_the_month() -> None:
    """A start recorded as '2025-03' is not 'therapyStart: 2025-03-01' (a day nobody documented);
    reasons and the labs list show the date as recorded."""
    from cds_service.domain import DraftOrder
    from cds_service.fhir.models import to_when
    from cds_service.rules import determination

    start = to_when("2025-03")
    assert str(start) == "2025-03"
    assert str(to_when("2024")) == "2024"
    lab = IgGResult("Observation/x", to_when("2025-06"), 380.0, "mg/dL")
    order = DraftOrder("MedicationRequest/o", "Privigen", "IV", 40.0, 28.0, When(TODAY), None)
    rec = Record(patient=None, orders=[order], igg=[lab], exposures=[_admin(start)], today=TODAY)
    det = determination.evaluate(rec, _kn(), wording.default())
    assert det is not None
    contract = det.to_contract()
    assert contract["therapyStart"] is None
    assert contract["labs"][0]["date"] == "2025-06"
    assert "2025-03-01" not in det.finding("baseline-igg").reason
