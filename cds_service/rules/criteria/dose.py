"""The ordered dose in mg/kg per 4 weeks against the policy range for the route, at the documented
weight.
"""

from __future__ import annotations

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
    evidence = tuple(
        r for r in (order.ref if order else None, d.weight.ref if d.weight else None) if r
    )
    extra = _product_notes(ctx)
    if order is not None and order.dose_basis:
        extra.insert(0, say(f"dose.{order.dose_basis}", **dict(order.dose_basis_fields)))

    def finding(status: Status, reason: str, missing: tuple[Missing, ...] = ()) -> Finding:
        key = getattr(reason, "key", "")
        return Finding("dose", status, " ".join([reason, *extra]), evidence, missing, key)

    if order is not None and order.course_doses is not None:
        extra.insert(0, say("dose.basis-course", doses=fmt(order.course_doses)))
    if (
        order is not None
        and order.mg_per_kg_dose is not None
        and order.interval_days is not None
        and d.weight is None
    ):
        return finding(
            Status.INSUFFICIENT,
            say(
                "dose.per-kg-no-weight",
                mgkg=fmt(d.mg_per_kg_per_4_weeks or 0),
                months=months,
                lo=fmt(d.low),
                hi=fmt(d.high),
            ),
            (say.need("dose.missing-weight", months=months),),
        )
    if order is None or d.grams_per_dose is None or order.interval_days is None:
        return finding(Status.INSUFFICIENT, say("dose.no-dose"), (say.need("dose.missing-dose"),))
    fields = {
        "grams": d.grams_per_dose,
        "interval": round(order.interval_days, 1),
        "lo": fmt(d.low),
        "hi": fmt(d.high),
        "route": say(f"dose.route.{d.range_route or order.route or 'unknown'}"),
    }
    if d.weight is None or d.mg_per_kg_per_4_weeks is None:
        return finding(
            Status.INSUFFICIENT,
            say("dose.no-weight", months=months, **fields),
            (say.need("dose.missing-weight", months=months),),
        )
    fields |= {"mgkg": d.mg_per_kg_per_4_weeks, "weight": round(d.weight.kg, 1)}
    others = ctx.record.orders[1:]
    if others and d.mg_per_kg_per_4_weeks <= d.high:  # too high alone stays too high
        evidence += tuple(o.ref for o in others)
        return finding(
            Status.INSUFFICIENT,
            say("dose.several-orders", count=len(others) + 1, **fields),
            (say.need("dose.missing-several-orders"),),
        )
    if d.status is Status.MET:
        return finding(Status.MET, say("dose.met", **fields))
    side = "high" if d.mg_per_kg_per_4_weeks > d.high else "low"
    return finding(Status.NOT_MET, say(f"dose.not-met-{side}", **fields))
