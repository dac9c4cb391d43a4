"""The policy's minimum age at the order date; a partial birth date decides only when both ends
agree.
"""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Status,
)
from cds_service.rules.context import (
    Context,
    age_years,
)


def decide(ctx: Context) -> Finding:
    patient = ctx.record.patient
    min_age = ctx.params.age.min_age_years
    if patient is None or patient.birth_date is None:
        return Finding(
            "age",
            Status.INSUFFICIENT,
            ctx.say("age.insufficient"),
            (patient.ref,) if patient else (),
            (ctx.say.need("age.missing"),),
        )
    years = age_years(patient.birth_date, ctx.record.today)
    if patient.birth_date_last is not None:  # a partial birth date: decide only if both ends agree
        youngest = age_years(patient.birth_date_last, ctx.record.today)
        if youngest < min_age <= years:
            return Finding(
                "age",
                Status.INSUFFICIENT,
                ctx.say("age.partial", low=youngest, high=years, min_age=min_age),
                (patient.ref,),
                (ctx.say.need("age.missing"),),
            )
    status = Status.MET if years >= min_age else Status.NOT_MET
    key = f"age.{status.value}"
    if years < min_age:  # a young child's age reads better in months
        key = "age.not-met-months"
    months = (
        (ctx.record.today.year - patient.birth_date.year) * 12
        + (ctx.record.today.month - patient.birth_date.month)
        - (ctx.record.today.day < patient.birth_date.day)
    )
    return Finding(
        "age",
        status,
        ctx.say(key, age=years, months=months, min_age=min_age),
        (patient.ref,),
    )
