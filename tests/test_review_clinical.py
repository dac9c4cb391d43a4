"""Clinical review: each test pins a defect found against the contract's timeline/outcome rules or
the policy's cited rule (cds_service/knowledge/RULES.md)."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from fastapi.testclient import TestClient

from cds_service import criteria, dosing, knowledge, timeline, wording
from cds_service.domain import (
    ConditionFact,
    EncounterFact,
    Exposure,
    IgGResult,
    Phase,
    Record,
    Status,
    When,
)

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


def test_instants_in_different_zones_compare_as_instants() -> None:
    """IgG drawn 23:30 at UTC-5 on 03-04 is 04:30Z on 03-05, after an IG dose at 02:00Z on 03-05:
    it is on treatment, not a baseline (the local calendar dates must not decide)."""
    drawn = dt.datetime(2025, 3, 4, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    dosed = dt.datetime(2025, 3, 5, 2, 0, tzinfo=dt.UTC)
    lab = IgGResult("Observation/x", When(drawn.date(), drawn), 380.0, "mg/dL")
    tl = timeline.build([_admin(When(dosed.date(), dosed))], [lab])
    assert tl.labs[0].phase is Phase.ON_TREATMENT


def _infection(rid: str, day: dt.date | None, code: str = "J13") -> ConditionFact:
    w = When(day) if day else None
    return ConditionFact(f"Condition/{rid}", ((ICD, code),), w, None, True, False)


def test_infections_counted_once_per_day() -> None:
    """RULES.md infection-history: episodes from Conditions and Encounters, one per day. Two
    Conditions (or two Encounters) on the same day are one episode, not 'recurrent' infections."""
    day = dt.date(2025, 6, 1)
    rec = Record(
        patient=None,
        orders=[],
        conditions=[_infection("a", day), _infection("b", day, "A49.9")],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT
    rec = Record(
        patient=None,
        orders=[],
        encounters=[
            EncounterFact("Encounter/a", ((ICD, "J13"),), When(day)),
            EncounterFact("Encounter/b", ((ICD, "J13"),), When(day)),
        ],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT


def test_undated_infections_do_not_prove_the_lookback() -> None:
    """≥ 2 episodes *in 60 months*: an episode without a date cannot be shown to fall in the
    look-back, so it never makes the criterion met."""
    rec = Record(
        patient=None,
        orders=[],
        conditions=[_infection("a", None), _infection("b", None, "A49.9")],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT


def test_partial_date_result_is_not_baseline_within_its_month() -> None:
    """An IgG dated only '2025-03' may have been drawn after an IG dose on 2025-03-15: its phase is
    unknown, never baseline (a partial date is not the first day of its month)."""
    from cds_service.fhir.models import to_when

    lab = IgGResult("Observation/x", to_when("2025-03"), 380.0, "mg/dL")
    tl = timeline.build([_admin(When(dt.date(2025, 3, 15)))], [lab])
    assert tl.labs[0].phase is Phase.UNKNOWN
    year = IgGResult("Observation/y", to_when("2025"), 380.0, "mg/dL")
    assert timeline.build([_admin(When(dt.date(2025, 6, 1)))], [year]).labs[0].phase is (
        Phase.UNKNOWN
    )
    earlier = IgGResult("Observation/z", to_when("2025-02"), 380.0, "mg/dL")
    tl = timeline.build([_admin(When(dt.date(2025, 3, 15)))], [earlier])
    assert tl.labs[0].phase is Phase.BASELINE


def test_partial_start_date_leaves_same_month_results_unknown() -> None:
    """IG started '2025-03' (day unknown): an IgG on 2025-03-10 may be pre-treatment or not."""
    from cds_service.fhir.models import to_when

    lab = IgGResult("Observation/x", When(dt.date(2025, 3, 10)), 380.0, "mg/dL")
    tl = timeline.build([_admin(to_when("2025-03"))], [lab])
    assert tl.labs[0].phase is Phase.UNKNOWN


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


def test_ongoing_causative_drug_started_long_ago_is_a_secondary_cause() -> None:
    """An active MedicationStatement for carbamazepine started in 2020 and still taken: the drug
    is being given now, within the 12-month look-back. Its start date must not hide it.
    (Carbamazepine is an association the source supports only as a review, so the finding asks
    for that review rather than denying: issue 10.)"""
    from cds_service.record import RecordBuilder

    statement = {
        "resourceType": "MedicationStatement",
        "id": "cbz",
        "status": "active",
        "medicationCodeableConcept": {"text": "Carbamazepine 200 mg tablet"},
        "subject": {"reference": "Patient/p"},
        "effectivePeriod": {"start": "2020-05-01"},
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([statement], None)
    assert [d.ref for d in rec.drugs] == ["MedicationStatement/cbz"]
    finding = criteria.secondary_causes(_ctx(rec))
    assert finding.status is Status.INSUFFICIENT
    assert "MedicationStatement/cbz" in finding.evidence
    assert any("review of carbamazepine" in m for m in finding.missing)
    # a course that ended more than 12 months ago is not
    statement["status"] = "completed"
    statement["effectivePeriod"] = {"start": "2020-05-01", "end": "2023-01-01"}
    rec = RecordBuilder(_kn(), "p", TODAY).build([statement], None)
    finding = criteria.secondary_causes(_ctx(rec))
    assert finding.status is not Status.NOT_MET
    assert "MedicationStatement/cbz" not in finding.evidence


def test_a_second_ig_draft_order_is_not_silently_ignored_by_the_dose_check() -> None:
    """Two IG orders signed together (IVIG 30 g q4w and SCIG 10 g weekly, 70 kg): the first alone
    is 429 mg/kg per 4 weeks (in range), but 70 g per 4 weeks more is given. The dose is not
    confirmed within range on the first order alone."""
    from cds_service import determination
    from cds_service.domain import DraftOrder, Measurement

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


def test_declined_dispense_is_not_ig_exposure() -> None:
    """A MedicationDispense with status 'declined' was never handed over: not IG exposure, so it
    neither makes the request a continuation nor turns an earlier IgG into 'unknown'."""
    from cds_service.record import RecordBuilder

    dispense = {
        "resourceType": "MedicationDispense",
        "id": "d1",
        "status": "declined",
        "medicationCodeableConcept": {"text": "Privigen 10% 20 g"},
        "subject": {"reference": "Patient/p"},
        "whenPrepared": "2025-05-01",
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([dispense], None)
    assert rec.exposures == []


def test_partial_dates_are_not_reported_as_the_first_of_the_month() -> None:
    """A start recorded as '2025-03' is not 'therapyStart: 2025-03-01' (a day nobody documented);
    reasons and the labs list show the date as recorded."""
    from cds_service import determination
    from cds_service.domain import DraftOrder
    from cds_service.fhir.models import to_when

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


def test_unreadable_ig_administration_is_not_read_as_no_therapy() -> None:
    """A MedicationAdministration of Privigen that fails validation (a malformed date) is a
    DataIssue; it must not vanish, turning the patient into 'never treated' and every IgG into
    a baseline (contract: data that could not be read is never treated as met)."""
    from cds_service.record import RecordBuilder

    admin = {
        "resourceType": "MedicationAdministration",
        "id": "ma1",
        "status": "completed",
        "medicationCodeableConcept": {"text": "Privigen 10% 40 g"},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2025-13-45",
    }
    igg = {
        "resourceType": "Observation",
        "id": "igg1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2025-06-01",
        "valueQuantity": {"value": 450, "unit": "mg/dL"},
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([admin, igg], None)
    assert any(i.ref == "MedicationAdministration/ma1" for i in rec.issues)
    assert criteria.baseline_igg(_ctx(rec)).status is Status.INSUFFICIENT


def test_unreadable_non_ig_medication_by_reference_is_not_ig_exposure() -> None:
    from cds_service.record import RecordBuilder

    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"text": "Lisinopril 10 mg tablet"},
    }
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2025-13-45",
    }
    rec = RecordBuilder(_kn(), "p", TODAY).build([med, statement], None)
    assert rec.exposures == []
    med["code"] = {"text": "Hizentra 20% 10 g"}
    rec = RecordBuilder(_kn(), "p", TODAY).build([med, statement], None)
    assert [e.ref for e in rec.exposures] == ["MedicationStatement/s1"]


def test_unreadable_condition_or_medication_never_lets_secondary_causes_be_met(
    client: TestClient,
) -> None:
    """The complete initial scenario meets criteria. Add an active CLL Condition (a malignancy,
    i.e. a secondary cause) whose onset is malformed: it cannot be read, so it is a DataIssue, but
    the exclusion of secondary causes must not then be 'met' as if it were not on record."""
    from tests.test_rule_variants import _add, _condition, _finding, _run

    def change(req: dict[str, Any]) -> None:
        cll = _condition("cll-dx", ICD, "C91.10")
        cll["onsetDateTime"] = "2025-13-45"
        _add(req, "conditions", cll)

    det = _run(client, change)
    finding = _finding(det, "secondary-causes-excluded")
    assert finding["status"] == "insufficient"
    assert "Condition/cll-dx" in finding["evidence"]
    assert det["outcome"] != "meets-criteria"


def test_unreadable_condition_makes_diagnosis_insufficient_not_not_met(client: TestClient) -> None:
    """The CVID Condition itself cannot be read (malformed onset): the diagnosis is not shown to
    be absent, so 'not-met' (and does-not-meet-criteria) would rest on no documented evidence."""
    from tests.test_rule_variants import _entries, _finding, _run

    def change(req: dict[str, Any]) -> None:
        for e in _entries(req, "conditions"):
            codes = [c.get("code", "") for c in e["resource"]["code"].get("coding", [])]
            if any(str(c).startswith("D83") for c in codes):
                e["resource"]["onsetDateTime"] = "2025-13-45"

    det = _run(client, change)
    finding = _finding(det, "diagnosis")
    assert finding["status"] == "insufficient"
    assert finding["evidence"]


def test_igg_without_a_value_is_not_called_a_unit_problem() -> None:
    """An IgG Observation with no value (dataAbsentReason, e.g. specimen haemolysed) was reported
    as 'units could not be converted (none)'. The reason must say there is no result value."""
    lab = IgGResult("Observation/x", When(dt.date(2025, 6, 1)), None, None, has_value=False)
    rec = Record(patient=None, orders=[], igg=[lab], today=TODAY)
    finding = criteria.baseline_igg(_ctx(rec))
    assert finding.status is Status.INSUFFICIENT
    assert "units" not in finding.reason
    assert "Observation/x" in finding.evidence


def test_causative_drug_with_a_partial_date_overlapping_the_lookback_is_not_excluded() -> None:
    """Rituximab dated only '2025' on an order of 2026-01-15: it may have been given in December
    2025, inside the 12-month look-back. The exclusion cannot be met on that."""
    from cds_service.domain import DrugExposure
    from cds_service.fhir.models import to_when

    drug = DrugExposure("MedicationStatement/r", (), "rituximab", to_when("2025"))
    rec = Record(patient=None, orders=[], drugs=[drug], today=TODAY)
    finding = criteria.secondary_causes(_ctx(rec))
    assert finding.status is not Status.MET
    assert "MedicationStatement/r" in finding.evidence
    assert "rituximab" in finding.reason


def test_provisional_infections_are_not_documented_episodes() -> None:
    """Two pneumonias recorded as provisional / differential (rule-out) are not documented
    infections, as a provisional diagnosis is not documented (RULES.md diagnosis)."""
    rec = Record(
        patient=None,
        orders=[],
        conditions=[
            ConditionFact(
                "Condition/a", ((ICD, "J13"),), When(dt.date(2025, 2, 1)), None, True, False, False
            ),
            ConditionFact(
                "Condition/b", ((ICD, "J13"),), When(dt.date(2025, 6, 1)), None, True, False, False
            ),
        ],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT


def test_an_ongoing_course_ends_at_the_order_date_not_the_wall_clock() -> None:
    """A record is built as of the order's date: an active prednisone statement started on
    2024-01-01 with no end, evaluated for an order authored 2024-03-01, has run 61 days — not
    until the real today (a re-review with a past --as-of, a replayed hook call)."""
    from cds_service.record import RecordBuilder

    statement = {
        "resourceType": "MedicationStatement",
        "id": "pred",
        "status": "active",
        "medicationCodeableConcept": {"text": "Prednisone 20 mg tablet"},
        "subject": {"reference": "Patient/p"},
        "effectivePeriod": {"start": "2024-01-01"},
    }
    draft = {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "ig",
                    "status": "draft",
                    "intent": "order",
                    "subject": {"reference": "Patient/p"},
                    "authoredOn": "2024-03-01",
                    "medicationCodeableConcept": {"text": "Privigen 10% IV"},
                }
            }
        ],
    }
    for wall_clock in (dt.date(2024, 3, 1), dt.date(2026, 12, 2)):
        rec = RecordBuilder(_kn(), "p", wall_clock).build([statement], draft)
        assert rec.today == dt.date(2024, 3, 1)
        assert [(d.ref, d.days) for d in rec.drugs] == [("MedicationStatement/pred", 61.0)]
