"""Continuation monitoring: a recent pre-infusion trough (a level drawn just after an infusion is
its peak).
"""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Phase,
    Status,
    When,
)
from cds_service.rules.context import (
    Context,
    fmt,
    months_before,
)


def decide(ctx: Context) -> Finding:
    cid = "trough-monitoring"
    if not ctx.continuation:
        return Finding(cid, Status.NOT_APPLICABLE, ctx.say(f"{cid}.not-applicable"))
    months = ctx.params.trough_monitoring.interval_months
    missing = (ctx.say.need(f"{cid}.missing", months=months),)
    on_treatment = [
        p.result
        for p in ctx.timeline.labs
        if p.phase is Phase.ON_TREATMENT and p.result.value_mg_dl is not None
    ]
    hours = ctx.params.trough_monitoring.peak_window_hours
    peaks = {r.ref: hit for r in on_treatment if (hit := after_infusion(ctx, r.when, hours))}
    troughs = [r for r in on_treatment if r.ref not in peaks]
    if not troughs and peaks:
        latest_peak = on_treatment[-1]
        admin_ref, admin_when = peaks[latest_peak.ref]
        return Finding(
            cid,
            Status.INSUFFICIENT,
            ctx.say(
                f"{cid}.peak",
                date=str(latest_peak.when),
                infusion=str(admin_when),
                hours=fmt(hours),
            ),
            (latest_peak.ref, admin_ref),
            missing,
        )
    if not troughs:
        return Finding(cid, Status.INSUFFICIENT, ctx.say(f"{cid}.none"), (), missing)
    latest = troughs[-1]
    since = months_before(ctx.record.today, months)
    if latest.when is not None and latest.when.date >= since:
        return Finding(
            cid,
            Status.MET,
            ctx.say(
                f"{cid}.met",
                value=fmt(latest.value_mg_dl or 0),
                date=str(latest.when),
                months=months,
            ),
            (latest.ref,),
        )
    return Finding(
        cid,
        Status.INSUFFICIENT,
        ctx.say(f"{cid}.stale", date=str(latest.when), months=months),
        (latest.ref,),
        missing,
    )


def after_infusion(ctx: Context, when: When | None, hours: float) -> tuple[str, When] | None:
    """The IV IG administration a result was drawn shortly after (a peak, not a pre-infusion
    trough): timed values within `hours` after the infusion; a date-only result on a later day
    within the window. A result on the infusion's own day without times counts as drawn
    before it (a trough is drawn on infusion day, before the infusion)."""
    if when is None or hours <= 0:
        return None
    for ref, start in ctx.iv_infusions:  # not conventional SCIG: no peak to avoid there
        if when.instant is not None and start.instant is not None:
            gap = (when.instant - start.instant).total_seconds() / 3600.0
        else:
            days = (when.date - start.date).days
            if days == 0:
                continue
            gap = days * 24.0
        if 0 < gap <= hours:
            return ref, start
    return None
