"""Recurrent bacterial infections: at least the policy's number of dated episodes, one per day, in
the look-back.
"""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Status,
)
from cds_service.rules.context import (
    Context,
    infection_episodes,
    months_before,
)


def decide(ctx: Context) -> Finding:
    rule = ctx.params.infection_history
    min_count = rule.min_count
    anchor = ctx.timeline.reference_point.date if ctx.timeline.reference_point else ctx.record.today
    since = months_before(anchor, rule.lookback_months)
    # an undated episode cannot be shown to fall in the look-back: it never counts towards met
    episodes = [
        e
        for e in infection_episodes(ctx)
        if e.when is not None and since <= e.when.date <= max(anchor, ctx.record.today)
    ]
    # before therapy for continuation requests; all in the window for initial ones
    before = [e for e in episodes if e.when is not None and e.when.date <= anchor]
    refs = tuple(e.ref for e in before)
    if len(before) >= min_count:
        names = "; ".join(f"{e.label} on {e.when}" if e.when else e.label for e in before)
        return Finding(
            "infection-history",
            Status.MET,
            ctx.say("infection-history.met", count=len(before), names=names),
            refs,
        )
    reason = ctx.say(
        "infection-history.insufficient",
        count=len(before),
        min=min_count,
        months=rule.lookback_months,
    )
    if not before and ctx.unreadable("conditions"):
        reason = ctx.say("unreadable", what="Conditions", keys="conditions")
    elif not before and "conditions" in ctx.record.empty:
        reason = ctx.say("infection-history.none-on-record")
    return Finding(
        "infection-history",
        Status.INSUFFICIENT,
        reason,
        refs,
        (ctx.say.need("infection-history.missing"),),
    )
