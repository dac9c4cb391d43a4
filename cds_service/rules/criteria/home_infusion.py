"""Home-infusion services follow the IG outcome (derived, never a reason for it)."""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Outcome,
    Status,
)
from cds_service.rules.context import (
    Context,
)


def decide(ctx: Context, outcome: Outcome) -> Finding:
    status = {Outcome.MEETS: Status.MET, Outcome.DOES_NOT_MEET: Status.NOT_MET}.get(
        outcome, Status.INSUFFICIENT
    )
    order = ctx.record.orders[0].ref if ctx.record.orders else None
    return Finding(
        "home-infusion", status, ctx.say(f"home-infusion.{status.value}"), (order,) if order else ()
    )
