"""Dose arithmetic: grams per dose and interval -> mg/kg per 4 weeks against the policy range.

mg/kg per 4 weeks is reported as ordered, with no IVIG/SCIG equivalence factor (contract), so a
weekly SCIG order and a 4-weekly IVIG order of the same monthly grams compare equal.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from cds_service import units
from cds_service.domain import DraftOrder, Measurement, Status
from cds_service.knowledge import Knowledge
from cds_service.knowledge.policy import DoseParams

DAYS_PER_4_WEEKS = 28.0


@dataclass(frozen=True)
class Weight:
    ref: str
    kg: float
    date: dt.date | None


@dataclass(frozen=True)
class DoseCheck:
    order: DraftOrder | None
    weight: Weight | None
    mg_per_kg_per_4_weeks: float | None
    status: Status
    low: float
    high: float
    illustrative: tuple[tuple[float, float], ...]  # (kg, mg/kg per 4 weeks) when weight missing
    range_route: str | None = None  # the route whose range applies, when not the order's own
    grams_per_dose: float | None = None  # as ordered, or a per-kg dose at the documented weight
    # the latest weight older than the recency window: not enough for the policy, but the card
    # shows what the dose would be at it (instead of made-up weights) and asks for a re-weigh
    stale_weight: Weight | None = None

    def grams_in_range(self, kg: float) -> tuple[float, float] | None:
        """The gram doses at the order's interval that fall in the policy range at `kg`."""
        order = self.order
        if order is None or order.interval_days is None:
            return None
        n = doses_per_4_weeks(order.interval_days, order.course_doses)
        if not n:
            return None
        return self.low * kg / 1000.0 / n, self.high * kg / 1000.0 / n

    def proposed_grams(self) -> float | None:
        """The in-range dose nearest the ordered one, in whole grams, for an out-of-range order
        at the documented weight (None when in range, not computable, or no whole gram fits)."""
        if self.status is not Status.NOT_MET or self.weight is None or not self.grams_per_dose:
            return None
        bounds = self.grams_in_range(self.weight.kg)
        if bounds is None:
            return None
        lo, hi = bounds
        grams = float(math.floor(hi)) if self.grams_per_dose > hi else float(math.ceil(lo))
        return grams if lo <= grams <= hi else None

    def mg_per_kg_at(self, grams: float, kg: float) -> float | None:
        order = self.order
        if order is None or order.interval_days is None:
            return None
        return round(mg_per_kg_per_4_weeks(grams, order.interval_days, kg, order.course_doses), 1)


def doses_per_4_weeks(interval_days: float | None, course_doses: float | None) -> float | None:
    """How many doses fall in 4 weeks: 28 / interval for an open-ended repeat; the whole course
    for a course-limited order that fits in 4 weeks (1 g/kg daily x 2 days is 2 doses, not 28)."""
    if interval_days is not None and interval_days <= 0:
        return None
    if course_doses is not None and course_doses < 1:
        return None  # a stated course that cannot be read: the dose is not computed
    if course_doses is not None and (
        interval_days is None or course_doses * interval_days <= DAYS_PER_4_WEEKS
    ):
        return course_doses
    return None if interval_days is None else DAYS_PER_4_WEEKS / interval_days


def mg_per_kg_per_4_weeks(
    grams: float, interval_days: float, kg: float, course_doses: float | None = None
) -> float:
    """(grams x 1000 / kg) times the doses in 4 weeks."""
    n = doses_per_4_weeks(interval_days, course_doses) or 0.0
    return grams * 1000.0 / kg * n


def latest_weight(
    measurements: Sequence[Measurement], kn: Knowledge, today: dt.date, recency_months: int | None
) -> Weight | None:
    """Most recent body weight in a convertible unit, no older than the recency window (any
    age when `recency_months` is None)."""
    vs = kn.vs("body-weight")
    oldest = (
        dt.date.min
        if recency_months is None
        else today - dt.timedelta(days=round(recency_months * 30.44))
    )
    best: Weight | None = None
    for m in measurements:
        if m.value is None or not vs.any_match(m.codings):
            continue
        kg = units.weight_to_kg(m.value, m.unit)
        if kg is None or kg <= 0:
            continue
        date = m.when.date if m.when else None
        if date is None or date < oldest or date > today:
            continue
        if best is None or (best.date is not None and date > best.date):
            best = Weight(m.ref, kg, date)
    return best


def policy_range(rule: DoseParams, route: str | None) -> tuple[float, float]:
    """The policy's mg/kg per 4 weeks range for the route (IVIG range when the route is unknown)."""
    if route == "SC":
        return rule.scig_min_mg_per_kg_per_4_weeks, rule.scig_max_mg_per_kg_per_4_weeks
    return rule.min_mg_per_kg_per_4_weeks, rule.max_mg_per_kg_per_4_weeks


def check(
    order: DraftOrder | None, measurements: Sequence[Measurement], kn: Knowledge, today: dt.date
) -> DoseCheck:
    rule = kn.criteria.dose
    bounds = _policy_bounds(order, kn)
    low, high, range_route = bounds
    weight = latest_weight(measurements, kn, today, rule.weight_recency_months)
    dose = _ordered(order, weight)
    grams, interval = dose.grams, dose.interval
    n = doses_per_4_weeks(interval, dose.course)
    if interval is None or n is None or (grams is None and dose.per_kg is None):
        return DoseCheck(
            order, weight, None, Status.INSUFFICIENT, low, high, (), range_route, grams
        )
    if weight is None:
        return _without_weight(order, dose, interval, n, bounds, measurements, kn, today)
    assert grams is not None
    value = round(mg_per_kg_per_4_weeks(grams, interval, weight.kg, dose.course), 1)
    status = Status.MET if low <= value <= high else Status.NOT_MET
    return DoseCheck(order, weight, value, status, low, high, (), range_route, grams)


def _policy_bounds(order: DraftOrder | None, kn: Knowledge) -> tuple[float, float, str | None]:
    """The mg/kg per 4 weeks range for the order's route, and the route whose range applies
    when it is not the order's own (None when it is)."""
    route = order.route if order else None
    range_route: str | None = None
    product = next((p for p in kn.products.products if order and p.id == order.product_id), None)
    if route == "SC" and product is not None and product.scig_ivig_conversion_factor == 1.0:
        # facilitated SCIG (HyQvia) is given at the IVIG monthly dose: the IVIG range applies
        route, range_route = "IV", "fSCIG"
    low, high = policy_range(kn.criteria.dose, route)
    return low, high, range_route


@dataclass(frozen=True)
class _Ordered:
    """The order's dose as the arithmetic reads it (all None without an order)."""

    grams: float | None  # per dose; a per-kg dose converted at the weight, when there is one
    per_kg: float | None  # mg/kg per dose, for a weight-based order
    interval: float | None  # days between doses
    course: float | None  # doses in a course-limited order


def _ordered(order: DraftOrder | None, weight: Weight | None) -> _Ordered:
    """Grams per dose as ordered, or a weight-based dose in grams at the documented weight."""
    grams = order.grams_per_dose if order else None
    per_kg = order.mg_per_kg_dose if order else None
    if per_kg is not None and weight is not None:
        grams = round(per_kg * weight.kg / 1000.0, 3)  # the weight-based dose in grams
    interval = order.interval_days if order else None
    course = order.course_doses if order else None
    return _Ordered(grams, per_kg, interval, course)


def _without_weight(
    order: DraftOrder | None,
    dose: _Ordered,
    interval: float,
    n: float,
    bounds: tuple[float, float, str | None],
    measurements: Sequence[Measurement],
    kn: Knowledge,
    today: dt.date,
) -> DoseCheck:
    """No weight in the recency window: a per-kg order keeps its mg/kg as ordered (the grams
    need the weight); a gram order is shown at the latest older weight when there is one, else
    at illustrative weights."""
    low, high, range_route = bounds
    if dose.per_kg is not None:  # mg/kg as ordered; the grams need the weight
        value = round(dose.per_kg * n, 1)
        return DoseCheck(order, None, value, Status.INSUFFICIENT, low, high, (), range_route, None)
    grams, course = dose.grams, dose.course
    assert grams is not None
    table = tuple(
        (float(kg), round(mg_per_kg_per_4_weeks(grams, interval, float(kg), course), 1))
        for kg in kn.criteria.dose.illustrative_weights_kg
    )
    stale = latest_weight(measurements, kn, today, None)
    return DoseCheck(
        order,
        None,
        None,
        Status.INSUFFICIENT,
        low,
        high,
        () if stale else table,
        range_route,
        grams,
        stale,
    )
