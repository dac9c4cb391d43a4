"""Property tests for the contract's timeline rule and the unit conversions (hypothesis)."""

from __future__ import annotations

import datetime as dt
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service import units
from cds_service.domain import (
    Exposure,
    IgGResult,
    Phase,
    When,
)
from cds_service.rules import timeline
from tests.support.facts import _admin

DAY0 = dt.date(2024, 1, 1)
ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=-5)), dt.timezone(dt.timedelta(hours=9))]


@st.composite
def whens(draw: st.DrawFn) -> When:
    """A date within two years, with or without a time (in one of several zones)."""
    day = DAY0 + dt.timedelta(days=draw(st.integers(0, 730)))
    if not draw(st.booleans()):
        return When(day)
    zone = draw(st.sampled_from(ZONES))
    local = dt.datetime.combine(day, dt.time(draw(st.integers(0, 23)), draw(st.integers(0, 59))))
    instant = local.replace(tzinfo=zone).astimezone(dt.UTC)
    return When(instant.date(), instant)


@st.composite
def exposures(draw: st.DrawFn) -> list[Exposure]:
    n = draw(st.integers(0, 4))
    out = []
    for i in range(n):
        start = draw(st.none() | whens())
        asserted = draw(st.none() | whens())
        kind = draw(
            st.sampled_from(
                [
                    "MedicationAdministration",
                    "MedicationRequest",
                    "MedicationStatement",
                    "MedicationDispense",
                ]
            )
        )
        out.append(Exposure(f"{kind}/e{i}", kind, "Privigen", start, asserted, ongoing=True))
    return out


@st.composite
def results(draw: st.DrawFn) -> list[IgGResult]:
    n = draw(st.integers(0, 6))
    return [
        IgGResult(f"Observation/r{i}", draw(st.none() | whens()), 400.0 + i, "mg/dL")
        for i in range(n)
    ]


def _surely_before(a: When, b: When) -> bool:
    """a is known to be earlier than b: an earlier day, or the same day with both times known."""
    if a.date != b.date:
        return a.date < b.date
    return a.instant is not None and b.instant is not None and a.instant < b.instant


def _phases(tl: timeline.Timeline) -> dict[str, Phase]:
    return {p.result.ref: p.phase for p in tl.labs}


@settings(max_examples=300, deadline=None)
@given(exposures(), results(), st.randoms())
def test_phases_do_not_depend_on_input_order(
    exps: list[Exposure], labs: list[IgGResult], rnd: object
) -> None:
    first = timeline.build(exps, labs)
    shuffled_exps, shuffled_labs = list(exps), list(labs)
    rnd.shuffle(shuffled_exps)  # type: ignore[attr-defined]
    rnd.shuffle(shuffled_labs)  # type: ignore[attr-defined]
    second = timeline.build(shuffled_exps, shuffled_labs)
    assert _phases(first) == _phases(second)
    assert [p.result.ref for p in first.labs] == [p.result.ref for p in second.labs]
    assert first.therapy_start == second.therapy_start
    assert first.first_dose == second.first_dose


@settings(max_examples=300, deadline=None)
@given(exposures(), results())
def test_never_baseline_on_or_after_any_ig_exposure(
    exps: list[Exposure], labs: list[IgGResult]
) -> None:
    tl = timeline.build(exps, labs)
    signs = [w for e in exps for w in (e.start, e.asserted) if w is not None]
    for point in tl.labs:
        when = point.result.when
        if when is None:
            assert point.phase is Phase.UNKNOWN
            continue
        if any(not _surely_before(when, s) for s in signs):
            assert point.phase is not Phase.BASELINE, (when, signs)
        if any(e.start is None for e in exps):
            assert point.phase is not Phase.BASELINE  # start undocumented: never baseline
        if not exps:
            assert point.phase is Phase.BASELINE


@settings(max_examples=200, deadline=None)
@given(exposures(), results())
def test_baseline_only_strictly_before_every_sign_of_therapy(
    exps: list[Exposure], labs: list[IgGResult]
) -> None:
    tl = timeline.build(exps, labs)
    signs = [w for e in exps for w in (e.start, e.asserted) if w is not None]
    for point in tl.labs:
        if point.phase is Phase.BASELINE and exps:
            when = point.result.when
            assert when is not None
            assert all(_surely_before(when, s) for s in signs)
        if point.phase is Phase.ON_TREATMENT:
            when = point.result.when
            assert when is not None
            assert any(_surely_before(s, when) for s in signs)


@given(
    st.floats(min_value=0.01, max_value=5000, allow_nan=False),
    st.sampled_from(["mg/dL", "g/L", "mg/L", "mg/mL", "MG/DL", "g/l"]),
)
def test_igg_units_round_trip(mg_dl: float, unit: str) -> None:
    sent = units.mg_dl_to(mg_dl, unit)
    assert sent is not None
    back = units.igg_to_mg_dl(sent, unit)
    assert back is not None
    assert math.isclose(back, mg_dl, rel_tol=1e-6, abs_tol=1e-3)


@given(st.text(max_size=8))
def test_unknown_igg_units_are_refused_not_guessed(unit: str) -> None:
    known = {"mg/dl", "g/l", "mg/l", "mg/ml"}
    result = units.igg_to_mg_dl(500.0, unit)
    assert (result is not None) == (unit.strip().lower() in known)


def test_contract_units_convert_exactly() -> None:
    assert units.igg_to_mg_dl(4.71, "g/L") == 471
    assert units.igg_to_mg_dl(4710, "mg/L") == 471
    assert units.igg_to_mg_dl(4.71, "mg/mL") == 471
    assert units.igg_to_mg_dl(471, "mg/dL") == 471
    assert units.igg_to_mg_dl(0.471, "g/dL") is None  # not in the contract's list
    assert units.igg_to_mg_dl(30, "umol/L") is None


@given(st.floats(min_value=1, max_value=500, allow_nan=False))
def test_weight_in_pounds_converts(kg: float) -> None:
    lb = kg / 0.45359237
    converted = units.weight_to_kg(lb, "[lb_av]")
    assert converted is not None
    assert math.isclose(converted, kg, abs_tol=1e-3)


def test_same_day_without_times_is_unknown_not_baseline() -> None:
    exp = Exposure(
        "MedicationAdministration/a",
        "MedicationAdministration",
        "Privigen",
        When(dt.date(2025, 1, 10)),
        None,
        ongoing=False,
    )
    lab = IgGResult("Observation/x", When(dt.date(2025, 1, 10)), 380.0, "mg/dL")
    assert timeline.build([exp], [lab]).labs[0].phase is Phase.UNKNOWN


def test_same_day_with_times_orders_by_instant() -> None:
    t = dt.datetime(2025, 1, 10, 9, 0, tzinfo=dt.UTC)
    exp = Exposure(
        "MedicationAdministration/a",
        "MedicationAdministration",
        "Privigen",
        When(t.date(), t),
        None,
        ongoing=False,
    )
    before = IgGResult("Observation/b", When(t.date(), t - dt.timedelta(hours=1)), 380.0, "mg/dL")
    after = IgGResult("Observation/c", When(t.date(), t + dt.timedelta(hours=1)), 900.0, "mg/dL")
    phases = _phases(timeline.build([exp], [before, after]))
    assert phases == {"Observation/b": Phase.BASELINE, "Observation/c": Phase.ON_TREATMENT}


def test_undated_start_leaves_earlier_results_unknown() -> None:
    """The seed's situation: an active statement without a start, asserted 2025-01-15."""
    exp = Exposure(
        "MedicationStatement/s",
        "MedicationStatement",
        "Privigen",
        None,
        When(dt.date(2025, 1, 15)),
        ongoing=True,
    )
    early = IgGResult("Observation/e", When(dt.date(2024, 12, 1)), 380.0, "mg/dL")
    late = IgGResult("Observation/l", When(dt.date(2025, 3, 12)), 471.0, "mg/dL")
    tl = timeline.build([exp], [early, late])
    assert _phases(tl) == {"Observation/e": Phase.UNKNOWN, "Observation/l": Phase.ON_TREATMENT}
    assert tl.therapy_start is None


def test_instants_in_different_zones_compare_as_instants() -> None:
    """IgG drawn 23:30 at UTC-5 on 03-04 is 04:30Z on 03-05, after an IG dose at 02:00Z on 03-05:
    it is on treatment, not a baseline (the local calendar dates must not decide)."""
    drawn = dt.datetime(2025, 3, 4, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    dosed = dt.datetime(2025, 3, 5, 2, 0, tzinfo=dt.UTC)
    lab = IgGResult("Observation/x", When(drawn.date(), drawn), 380.0, "mg/dL")
    tl = timeline.build([_admin(When(dosed.date(), dosed))], [lab])
    assert tl.labs[0].phase is Phase.ON_TREATMENT


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


@st.composite
def any_whens(draw: st.DrawFn) -> When:
    """A day, an instant (several zones) or a partial date (a month, a year), within a few months
    so that values often share a day, a month or an instant."""
    day = DAY0 + dt.timedelta(days=draw(st.integers(0, 90)))
    kind = draw(st.sampled_from(["day", "instant", "month", "year"]))
    if kind == "day":
        return When(day)
    if kind == "instant":
        zone = draw(st.sampled_from(ZONES))
        local = dt.datetime.combine(day, dt.time(draw(st.sampled_from([0, 1, 12, 23])), 0))
        instant = local.replace(tzinfo=zone).astimezone(dt.UTC)
        return When(instant.date(), instant)
    if kind == "month":
        first = day.replace(day=1)
        following = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return When(first, end=following - dt.timedelta(days=1))
    return When(dt.date(day.year, 1, 1), end=dt.date(day.year, 12, 31))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(any_whens(), max_size=6),
    st.none() | any_whens(),
    st.booleans(),
    st.booleans(),
)
def test_timeline_phase_equals_the_pairwise_rule(
    evidence: list[When], when: When | None, undated: bool, any_exposure: bool
) -> None:
    """The timeline answers from the earliest evidence values (timeline._Bounds); the answer is
    the contract rule's, which phase_of states by comparing with every sign of therapy."""
    ev = tuple(evidence)
    fast = timeline._Bounds.of(ev).phase(when, undated, any_exposure)
    assert fast is timeline.phase_of(when, ev, undated, any_exposure)
