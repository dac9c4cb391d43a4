"""Domain facts built by hand for the criterion, timeline and record tests: the packaged
knowledge, a criterion context over a record, an IG administration, an infection."""

from __future__ import annotations

import datetime as dt
from functools import cache

from cds_service import knowledge, wording
from cds_service.domain import (
    Exposure,
    Record,
    When,
)
from cds_service.rules import dosing, timeline
from cds_service.rules import registry as criteria

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
TODAY = dt.date(2026, 1, 15)


@cache
def _kn() -> knowledge.Knowledge:
    return knowledge.load()


def _ctx(rec: Record) -> criteria.Context:
    kn = _kn()
    tl = timeline.build(rec.exposures, rec.igg)
    return criteria.Context(rec, tl, kn, wording.default(), dosing.check(None, [], kn, rec.today))


def _admin(when: When) -> Exposure:
    return Exposure(
        "MedicationAdministration/a", "MedicationAdministration", "Privigen", when, None, False
    )
