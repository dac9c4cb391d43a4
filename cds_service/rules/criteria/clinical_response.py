"""Continuation benefit: infections per year on therapy lower than in a comparable period before
it.
"""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Status,
)
from cds_service.rules.context import (
    Context,
    fmt,
    infection_episodes,
    months_before,
)


def decide(ctx: Context) -> Finding:
    """Fewer bacterial infections per year on therapy than in a comparable period before it
    (policy clinical-response: the period lengths), not raw lifetime counts."""
    cid = "clinical-response"
    if not ctx.continuation:
        return Finding(cid, Status.NOT_APPLICABLE, ctx.say(f"{cid}.not-applicable"))
    rule, say = ctx.params.clinical_response, ctx.say
    missing = (say.need(f"{cid}.missing"),)
    point = ctx.timeline.reference_point
    if point is None:
        return Finding(
            cid,
            Status.INSUFFICIENT,
            say(f"{cid}.insufficient", why=say(f"{cid}.why-no-start")),
            (),
            missing,
        )
    before_months = rule.before_months
    window_start = months_before(point.date, before_months)
    today = ctx.record.today
    episodes = [e for e in infection_episodes(ctx) if e.when is not None]
    before = [e for e in episodes if e.when and window_start <= e.when.date < point.date]
    after = [e for e in episodes if e.when and point.date <= e.when.date <= today]
    therapy_ref = ctx.timeline.first_dose_ref or next(iter(ctx.timeline.start_undocumented), None)
    evidence = tuple(e.ref for e in before + after) + ((therapy_ref,) if therapy_ref else ())
    on_days = (today - point.date).days
    on_months = on_days / 30.44
    min_on = rule.on_therapy_min_months
    if on_months < min_on:
        why = say(f"{cid}.why-too-early", months=fmt(round(on_months, 1)), min=min_on)
        return Finding(
            cid, Status.INSUFFICIENT, say(f"{cid}.insufficient", why=why), evidence, missing
        )
    if not before:
        why = say(f"{cid}.why-no-history", months=before_months)
        return Finding(
            cid, Status.INSUFFICIENT, say(f"{cid}.insufficient", why=why), evidence, missing
        )
    rate_before = len(before) / (before_months / 12.0)
    rate_after = len(after) / (on_days / 365.25)
    fields = {
        "before": len(before),
        "after": len(after),
        "since": str(point),
        "before_months": before_months,
        "after_months": fmt(round(on_months, 1)),
        "rate_before": fmt(round(rate_before, 1)),
        "rate_after": fmt(round(rate_after, 1)),
    }
    if rate_after < rate_before:
        # with the start undocumented, "before" means before the first record of therapy
        key = f"{cid}.met-undated" if ctx.timeline.start_undocumented else f"{cid}.met"
        return Finding(cid, Status.MET, say(key, **fields), evidence)
    return Finding(cid, Status.NOT_MET, say(f"{cid}.not-met", **fields), evidence)
