"""A covered primary humoral immunodeficiency documented as an active, confirmed Condition
(Medicare BPM §50.6 list; newer codes the list is silent on go to the reviewer).
"""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    Status,
)
from cds_service.rules.context import (
    Context,
    display,
)


def decide(ctx: Context) -> Finding:
    rule = ctx.params.diagnosis
    kn, say = ctx.kn, ctx.say
    covered = kn.vs(rule.valueset)
    every_pi = kn.vs(rule.valueset.split("|")[0])
    need_confirmed = rule.require_confirmed
    active = [c for c in ctx.record.conditions if c.active]
    hits = [
        c for c in active if covered.any_match(c.codings) and (c.confirmed or not need_confirmed)
    ]
    missing = (say.need("diagnosis.missing"),)
    if hits:
        codes = ", ".join(sorted({display(kn, covered, c) for c in hits}))
        groups = {covered.groups.get(m) for c in hits if (m := covered.first_match(c.codings))}
        names = say("diagnosis.name-cvid" if groups == {"CVID"} else "diagnosis.name-pi")
        return Finding(
            "diagnosis",
            Status.MET,
            say("diagnosis.met", names=names, codes=codes),
            tuple(c.ref for c in hits),
        )
    provisional = [c for c in active if covered.any_match(c.codings)]
    if provisional:
        codes = ", ".join(sorted({display(kn, covered, c) for c in provisional}))
        return Finding(
            "diagnosis",
            Status.INSUFFICIENT,
            say("diagnosis.provisional", codes=codes),
            tuple(c.ref for c in provisional),
            missing,
        )
    broad_vs = kn.vs(rule.broad_valueset)
    broad = [c for c in active if broad_vs.any_match(c.codings)]
    if broad:
        return Finding(
            "diagnosis",
            Status.INSUFFICIENT,
            say(
                "diagnosis.broad",
                codes=", ".join(sorted({display(kn, broad_vs, c) for c in broad})),
            ),
            tuple(c.ref for c in broad),
            missing,
        )
    if ctx.unreadable("conditions") or "conditions" in ctx.record.empty:
        key = "unreadable" if ctx.unreadable("conditions") else "none-on-record"
        return Finding("diagnosis", Status.INSUFFICIENT, say(f"diagnosis.{key}"), (), missing)
    # a Condition that could not be read may be the diagnosis: absent is not shown (contract)
    unread = sorted({i.ref for i in ctx.record.issues if i.ref.startswith("Condition/")})
    if unread:
        return Finding(
            "diagnosis",
            Status.INSUFFICIENT,
            say("diagnosis.unreadable-some", refs=", ".join(unread)),
            tuple(unread),
            missing,
        )
    uncovered = [
        c for c in active if every_pi.any_match(c.codings) and not broad_vs.any_match(c.codings)
    ]
    silent_vs = kn.vs(rule.silent_valueset) if rule.silent_valueset else None
    silent = [c for c in uncovered if silent_vs is not None and silent_vs.any_match(c.codings)]
    if silent and silent_vs is not None:
        codes = ", ".join(sorted({display(kn, silent_vs, c) for c in silent}))
        return Finding(
            "diagnosis",
            Status.INSUFFICIENT,
            say("diagnosis.list-silent", codes=codes, revision=rule.list_revision),
            tuple(c.ref for c in silent),
            (say.need("diagnosis.missing-list-silent", codes=codes),),
        )
    if uncovered:
        codes = ", ".join(sorted({display(kn, every_pi, c) for c in uncovered}))
        return Finding(
            "diagnosis",
            Status.NOT_MET,
            say("diagnosis.not-covered", codes=codes),
            tuple(c.ref for c in uncovered),
            missing,
        )
    return Finding("diagnosis", Status.NOT_MET, say("diagnosis.not-met"), (), missing)
