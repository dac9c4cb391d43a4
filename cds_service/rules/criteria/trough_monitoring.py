"""Continuation monitoring: a recent pre-infusion trough (a level drawn just after an infusion is
its peak).
"""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Status,
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
    on_treatment = ctx.on_treatment_levels
    hours = ctx.params.trough_monitoring.peak_window_hours
    peaks = ctx.peaks
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
