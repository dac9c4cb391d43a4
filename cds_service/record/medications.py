"""Medication courses and IG doses read from MedicationRequest / Statement / Administration /
Dispense models: the dosage elements, doses per day, a course's dates and length, and the grams
and interval of an IG order (from its dosage, else its dispense request).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from cds_service import units
from cds_service.domain import When
from cds_service.fhir import views
from cds_service.fhir.models import to_when
from cds_service.knowledge import Product
from cds_service.record.elements import quantity_of

Basis = tuple[str, tuple[tuple[str, str], ...]] | None
# a dosage of a request or statement, or a MedicationAdministration's single dosage
Dosages = views.Dosage | views.AdministrationDosage


def dosages_of(model: Any, rtype: str) -> list[Dosages]:
    """The Dosage elements of a medication resource (MedicationAdministration has one `dosage`,
    of another shape, read for its route only)."""
    if rtype == "MedicationAdministration":
        return [model.dosage] if getattr(model, "dosage", None) is not None else []
    return list(getattr(model, "dosageInstruction", None) or getattr(model, "dosage", None) or [])


def _per_day(rep: views.TimingRepeat | None) -> float | None:
    """Administrations per day from timing.repeat (frequency per period)."""
    if rep is None or rep.period is None:
        return None
    days = units.duration_to_days(float(rep.period), rep.periodUnit)
    if not days:
        return None
    return float(rep.frequency or 1) / days


def _repeat_of(d: Dosages) -> views.TimingRepeat | None:
    """The timing.repeat of a dosage (a MedicationAdministration's dosage has no timing)."""
    timing: views.Timing | None = getattr(d, "timing", None)
    return timing.repeat if timing is not None else None


def daily_mg(dosages: list[Dosages]) -> float | None:
    """mg of the drug per day from the first dosage with a mass dose and a frequency."""
    for d in dosages:
        rep = _repeat_of(d)
        per_day = _per_day(rep)
        for dr in getattr(d, "doseAndRate", None) or []:
            q = dr.doseQuantity or (dr.doseRange.high if dr.doseRange else None)
            value, unit = quantity_of(q)
            grams = units.mass_to_grams(value, unit) if value is not None else None
            if grams is not None and per_day is not None:
                return round(grams * 1000.0 * per_day, 3)
    return None


def _dosage_days(d: Dosages) -> float | None:
    """Days one dosage instruction covers: its bounds (duration or period), or its repeat count
    over the frequency; None when it does not say."""
    rep = _repeat_of(d)
    if rep is None:
        return None
    b = rep.boundsDuration
    if b is not None and b.value is not None:
        days = units.duration_to_days(float(b.value), b.code or b.unit)
        if days is not None:
            return days
    if rep.boundsPeriod is not None and rep.boundsPeriod.start and rep.boundsPeriod.end:
        a, b2 = to_when(rep.boundsPeriod.start), to_when(rep.boundsPeriod.end)
        if a is not None and b2 is not None:
            return float((b2.last - a.date).days + 1)
    per_day = _per_day(rep)
    if rep.count is not None and per_day:
        return float(rep.count) / per_day
    return None


def bounds_end(dosages: list[Dosages], start: When | None) -> When | None:
    """The last day an order's own timing covers (boundsPeriod.end, or its start plus a
    boundsDuration): a course authored long ago may still run into the look-back."""
    ends: list[When] = []
    for d in dosages:
        rep = _repeat_of(d)
        if rep is None:
            continue
        if rep.boundsPeriod is not None and rep.boundsPeriod.end:
            end = to_when(rep.boundsPeriod.end)
            if end is not None:
                ends.append(end)
        elif start is not None and rep.boundsDuration is not None:
            b = rep.boundsDuration
            days = units.duration_to_days(float(b.value), b.code or b.unit) if b.value else None
            if days is not None:  # duration_to_days refuses absurd lengths
                ends.append(When(start.date + dt.timedelta(days=round(days))))
    return max(ends, key=lambda w: w.last) if ends else None


def use_dates(
    model: views.MedicationConcept, rtype: str
) -> tuple[When | None, When | None, When | None]:
    """(start, asserted, last) of a medication use: when it was given, taken, ordered or
    handed over; when a statement was made; when a stated period ended."""
    asserted: When | None = None
    if rtype == "MedicationAdministration":
        given = cast(views.MedicationAdministration, model)
        start = to_when(
            given.effectiveDateTime or (given.effectivePeriod and given.effectivePeriod.start)
        )
    elif rtype == "MedicationRequest":
        start = to_when(cast(views.MedicationRequest, model).authoredOn)
    elif rtype == "MedicationStatement":
        taken = cast(views.MedicationStatement, model)
        start = to_when(
            taken.effectiveDateTime or (taken.effectivePeriod and taken.effectivePeriod.start)
        )
        asserted = to_when(taken.dateAsserted)
    else:
        handed = cast(views.MedicationDispense, model)
        start = to_when(handed.whenHandedOver or handed.whenPrepared)
    period: views.Period | None = getattr(model, "effectivePeriod", None)
    last = to_when(period.end) if period is not None and period.end else None
    return start, asserted, last


def course_days(
    model: Any, rtype: str, dosages: list[Dosages], first: dt.date | None, end: dt.date | None
) -> float | None:
    """How long the documented course lasts, in days, from what the record states: timing
    bounds (duration or period), a repeat count over its frequency, the supply duration, or the
    resource's own start and end. None when the record does not say."""
    if rtype == "MedicationAdministration":
        return 1.0
    # sequenced dosages (a taper: 60 mg x 7 d, then 50 mg x 7 d...) add up
    total = 0.0
    for d in dosages:
        days = _dosage_days(d)
        if days is not None:
            total += days
    if total > 0:
        return total
    request = getattr(model, "dispenseRequest", None)
    supply = getattr(request, "expectedSupplyDuration", None)
    if supply is not None and supply.value is not None:
        days = units.duration_to_days(float(supply.value), supply.code or supply.unit)
        if days is not None:
            refills = getattr(request, "numberOfRepeatsAllowed", None) or 0
            return days * (1 + int(refills))  # each refill is another supply
    if first is not None and end is not None and end >= first:
        return float((end - first).days + 1)
    return None


@dataclass(frozen=True)
class Dose:
    grams: float | None
    interval: float | None
    text: str | None
    basis: Basis
    mg_per_kg: float | None = None  # a weight-based dose (g/kg or mg/kg per dose)
    course_doses: float | None = None  # the number of doses when the order is course-limited


def order_dose(model: views.MedicationRequest, product: Product) -> Dose:
    """Grams per dose, interval in days, free text, how the grams were derived, a weight-based
    dose, and the number of doses of a course-limited order.

    Each dosageInstruction is read on its own (dose and interval from the same instruction);
    with several (a loading dose, then maintenance), the maintenance one decides: the last
    open-ended repeat, else the last with a dose. A dose in mL is converted with the product's
    labelled concentration (never guessed); a dose per kg is kept per kg (the documented weight
    turns it into grams); timing.repeat count or bounds make the order one course, not an
    endless repeat; without a dose, dispenseRequest (quantity over the expected supply
    duration) is the fallback.
    """
    read = [_instruction_dose(di, product) for di in _in_sequence(model.dosageInstruction or [])]
    text = next((d.text for d in read if d.text), None)
    dosed = [d for d in read if d.grams is not None or d.mg_per_kg is not None or d.basis]
    maintenance = [d for d in dosed if d.interval is not None and d.course_doses is None]
    candidates = maintenance or dosed
    chosen = candidates[-1] if candidates else None
    if chosen is None:
        interval = next((d.interval for d in read if d.interval is not None), None)
        grams, interval, basis = _dispense(model, interval)
        return Dose(grams, interval, text, basis)
    interval, course = chosen.interval, chosen.course_doses
    if course is not None and interval is None:
        interval = 1.0  # a course without a period: its doses on consecutive days
    return Dose(chosen.grams, interval, text, chosen.basis, chosen.mg_per_kg, course)


def _in_sequence(instructions: list[views.Dosage]) -> list[views.Dosage]:
    """Dosage instructions in the order they apply (`sequence` when given, else as listed)."""
    indexed = list(enumerate(instructions))
    indexed.sort(key=lambda item: (item[1].sequence is None, item[1].sequence or 0, item[0]))
    return [di for _, di in indexed]


def _instruction_dose(di: views.Dosage, product: Product) -> Dose:
    """What one dosageInstruction orders: its dose (g, mL, or per kg), interval and course."""
    grams = interval = per_kg = course = None
    basis: Basis = None
    for dr in di.doseAndRate or []:
        value, unit = quantity_of(dr.doseQuantity)
        if value is None or grams is not None or per_kg is not None:
            continue
        per_kg = units.dose_per_kg_mg(value, unit)
        if per_kg is not None:
            basis = ("basis-per-kg", (("dose", f"{value:g} {unit}"),))
            continue
        grams = units.mass_to_grams(value, unit)
        ml = units.volume_to_ml(value, unit) if grams is None else None
        if ml is not None:
            conc = product.concentration_g_per_ml
            fields = (("ml", f"{ml:g}"), ("product", product.name))
            if conc is None:
                basis = ("basis-ml-unknown", fields)
            else:
                grams = round(ml * conc, 4)
                basis = ("basis-ml", (*fields, ("conc", f"{conc:g}")))
    rep = di.timing.repeat if di.timing else None
    if rep is not None and rep.period is not None:
        days = units.duration_to_days(float(rep.period), rep.periodUnit)
        if days is not None:
            interval = days / float(rep.frequency or 1)
    if rep is not None:
        course = _course_doses(rep, interval)
    return Dose(grams, interval, di.text, basis, per_kg, course)


def _course_doses(rep: views.TimingRepeat, interval: float | None) -> float | None:
    """Doses in a course-limited order: repeat.count, or the bounds (duration or period) over
    the dosing interval; None for an open-ended repeat; 0 when the order states a course that
    no calendar holds (a zero, negative, reversed or absurd bound): the dose is not read."""
    if rep.count is not None:
        return float(rep.count) if rep.count >= 1 else 0.0
    days: float | None = None
    if rep.boundsDuration is not None:
        b = rep.boundsDuration
        days = (
            units.duration_to_days(float(b.value), b.code or b.unit)
            if b.value is not None
            else None
        )
    elif rep.boundsPeriod is not None and rep.boundsPeriod.start and rep.boundsPeriod.end:
        start, end = to_when(rep.boundsPeriod.start), to_when(rep.boundsPeriod.end)
        if start is not None and end is not None:
            days = float((end.last - start.date).days + 1)
    else:
        return None
    if days is None or days <= 0:
        return 0.0
    if not interval:
        return None
    return max(1.0, float(int(days / interval + 1e-9)))


def _dispense(
    model: views.MedicationRequest, interval: float | None
) -> tuple[float | None, float | None, Basis]:
    """Fallback: grams per dose from dispenseRequest quantity and expected supply duration."""
    dr = model.dispenseRequest
    if dr is None:
        return None, interval, None
    value, unit = quantity_of(dr.quantity)
    total = units.mass_to_grams(value, unit) if value is not None else None
    supply = dr.expectedSupplyDuration
    days = (
        units.duration_to_days(float(supply.value), supply.code or supply.unit)
        if supply is not None and supply.value is not None
        else None
    )
    if total is None or days is None or days <= 0:
        return None, interval, None
    fields = (("grams", f"{total:g}"), ("days", f"{days:g}"))
    if interval is None:
        return total, days, ("basis-dispense", fields)
    return round(total * interval / days, 4), interval, ("basis-dispense", fields)
