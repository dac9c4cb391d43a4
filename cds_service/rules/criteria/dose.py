"""The ordered dose in mg/kg per 4 weeks against the policy range for the route, at the documented
weight.
"""

from __future__ import annotations

from typing import Any

from cds_service.domain import (
    Finding,
    Missing,
    Status,
)
from cds_service.rules.context import (
    Context,
    age_years,
    fmt,
)


def _product_notes(ctx: Context) -> list[str]:
    """Label facts about the ordered product a reviewer should see next to the dose."""
    order, say = ctx.dose.order, ctx.say
    if order is None or not order.product_id:
        return []
    product = next((p for p in ctx.kn.products.products if p.id == order.product_id), None)
    if product is None:
        return []
    notes: list[str] = []
    if product.pi_indication is None and product.pi_indication_note:
        notes.append(say("dose.note-not-pi", product=product.name))
    patient = ctx.record.patient
    if product.min_age_pi_years is not None and patient and patient.birth_date:
        years = age_years(patient.birth_date, ctx.record.today)
        if years < product.min_age_pi_years:
            notes.append(
                say(
                    "dose.note-min-age",
                    product=product.name,
                    min_age=product.min_age_pi_years,
                    unverified="" if product.min_age_verified else say("unverified"),
                )
            )
    return notes


def decide(ctx: Context) -> Finding:
    d, say = ctx.dose, ctx.say
    months = ctx.params.dose.weight_recency_months
    order = d.order
    evidence = _evidence(ctx)
    extra = _notes(ctx)
    if _per_kg_without_weight(ctx):
        return _finding(
            Status.INSUFFICIENT,
            say(
                "dose.per-kg-no-weight",
                mgkg=fmt(d.mg_per_kg_per_4_weeks or 0),
                months=months,
                lo=fmt(d.low),
                hi=fmt(d.high),
            ),
            evidence,
            extra,
            (say.need("dose.missing-weight", months=months),),
        )
    if order is None or d.grams_per_dose is None or order.interval_days is None:
        missing = (say.need("dose.missing-dose"),)
        return _finding(Status.INSUFFICIENT, say("dose.no-dose"), evidence, extra, missing)
    fields = _fields(ctx, d.grams_per_dose, order.interval_days, order.route)
    if d.weight is None or d.mg_per_kg_per_4_weeks is None:
        return _finding(
            Status.INSUFFICIENT,
            say("dose.no-weight", months=months, **fields),
            evidence,
            extra,
            (say.need("dose.missing-weight", months=months),),
        )
    fields |= {"mgkg": d.mg_per_kg_per_4_weeks, "weight": round(d.weight.kg, 1)}
    return _judged(ctx, d.mg_per_kg_per_4_weeks, fields, evidence, extra)


def _evidence(ctx: Context) -> tuple[str, ...]:
    """The order and the weight the dose rests on, those on record."""
    order, weight = ctx.dose.order, ctx.dose.weight
    return tuple(r for r in (order.ref if order else None, weight.ref if weight else None) if r)


def _notes(ctx: Context) -> list[str]:
    """What follows the reason: how a course-limited order was counted, how the dose was read
    from the order, then the product's label facts."""
    order, say = ctx.dose.order, ctx.say
    extra = _product_notes(ctx)
    if order is not None and order.dose_basis:
        extra.insert(0, say(f"dose.{order.dose_basis}", **dict(order.dose_basis_fields)))
    if order is not None and order.course_doses is not None:
        extra.insert(0, say("dose.basis-course", doses=fmt(order.course_doses)))
    return extra


def _finding(
    status: Status,
    reason: str,
    evidence: tuple[str, ...],
    extra: list[str],
    missing: tuple[Missing, ...] = (),
) -> Finding:
    """The dose finding: the reason with the notes after it, keyed by the reason's wording."""
    key = getattr(reason, "key", "")
    return Finding("dose", status, " ".join([reason, *extra]), evidence, missing, key)


def _per_kg_without_weight(ctx: Context) -> bool:
    """A weight-based order (mg/kg at an interval) with no documented weight: the grams per
    dose cannot be known, which is said before anything else."""
    d = ctx.dose
    order = d.order
    return (
        order is not None
        and order.mg_per_kg_dose is not None
        and order.interval_days is not None
        and d.weight is None
    )


def _fields(
    ctx: Context, grams: float, interval_days: float, order_route: str | None
) -> dict[str, Any]:
    """The wording fields of an order in grams at an interval, against the range of its route."""
    d, say = ctx.dose, ctx.say
    return {
        "grams": grams,
        "interval": round(interval_days, 1),
        "lo": fmt(d.low),
        "hi": fmt(d.high),
        "route": say(f"dose.route.{d.range_route or order_route or 'unknown'}"),
    }


def _judged(
    ctx: Context,
    mgkg: float,
    fields: dict[str, Any],
    evidence: tuple[str, ...],
    extra: list[str],
) -> Finding:
    """The dose at the documented weight: with other orders on record (and not too high alone)
    which one is given is asked; else met, or not met too high or too low."""
    d, say = ctx.dose, ctx.say
    others = ctx.record.orders[1:]
    if others and mgkg <= d.high:  # too high alone stays too high
        evidence += tuple(o.ref for o in others)
        return _finding(
            Status.INSUFFICIENT,
            say("dose.several-orders", count=len(others) + 1, **fields),
            evidence,
            extra,
            (say.need("dose.missing-several-orders"),),
        )
    if d.status is Status.MET:
        return _finding(Status.MET, say("dose.met", **fields), evidence, extra)
    side = "high" if mgkg > d.high else "low"
    return _finding(Status.NOT_MET, say(f"dose.not-met-{side}", **fields), evidence, extra)
