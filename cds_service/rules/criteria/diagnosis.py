"""A covered primary humoral immunodeficiency documented as an active, confirmed Condition
(Medicare BPM §50.6 list; newer codes the list is silent on go to the reviewer).

`decide` is a ladder: the first rung that finds something answers. Each rung is a small named
fact about the active Conditions, in the order a reviewer reads the problem list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cds_service.domain import ConditionFact, Finding, Missing, Status
from cds_service.knowledge import ValueSet
from cds_service.rules.context import Context, display

CID = "diagnosis"


@dataclass(frozen=True)
class _Problems:
    """The active Conditions and the policy's value sets they are matched against."""

    ctx: Context
    active: list[ConditionFact]
    covered: ValueSet  # the policy's covered diagnoses
    every_pi: ValueSet  # every primary immunodeficiency code, covered or not
    broad: ValueSet  # codes too broad to name a covered diagnosis
    missing: tuple[Missing, ...]

    def codes(self, vs: ValueSet, found: list[ConditionFact]) -> str:
        return ", ".join(sorted({display(self.ctx.kn, vs, c) for c in found}))

    def insufficient(
        self, reason: str, refs: list[str], missing: tuple[Missing, ...] | None = None
    ) -> Finding:
        return Finding(CID, Status.INSUFFICIENT, reason, tuple(refs), missing or self.missing)


def _covered(p: _Problems) -> Finding | None:
    """Met: a covered diagnosis, confirmed where the policy requires it."""
    need_confirmed = p.ctx.params.diagnosis.require_confirmed
    hits = [
        c
        for c in p.active
        if p.covered.any_match(c.codings) and (c.confirmed or not need_confirmed)
    ]
    if not hits:
        return None
    groups = {p.covered.groups.get(m) for c in hits if (m := p.covered.first_match(c.codings))}
    names = p.ctx.say("diagnosis.name-cvid" if groups == {"CVID"} else "diagnosis.name-pi")
    return Finding(
        CID,
        Status.MET,
        p.ctx.say("diagnosis.met", names=names, codes=p.codes(p.covered, hits)),
        tuple(c.ref for c in hits),
    )


def _coded_in(p: _Problems, vs: ValueSet, key: str) -> Finding | None:
    """Documentation missing when an active Condition is coded in `vs` (worded by `key`)."""
    found = [c for c in p.active if vs.any_match(c.codings)]
    if not found:
        return None
    return p.insufficient(p.ctx.say(key, codes=p.codes(vs, found)), [c.ref for c in found])


def _provisional(p: _Problems) -> Finding | None:
    """A covered diagnosis that is not confirmed (provisional, differential)."""
    return _coded_in(p, p.covered, "diagnosis.provisional")


def _broad(p: _Problems) -> Finding | None:
    """A code too broad to say which immunodeficiency (the specific one is asked for)."""
    return _coded_in(p, p.broad, "diagnosis.broad")


def _not_read(p: _Problems) -> Finding | None:
    """No problem list to read, or a Condition that could not be read and may be the diagnosis:
    absent is not shown (contract)."""
    ctx = p.ctx
    if ctx.unreadable("conditions") or "conditions" in ctx.record.empty:
        key = "unreadable" if ctx.unreadable("conditions") else "none-on-record"
        return Finding(CID, Status.INSUFFICIENT, ctx.say(f"diagnosis.{key}"), (), p.missing)
    unread = sorted({i.ref for i in ctx.record.issues if i.ref.startswith("Condition/")})
    if not unread:
        return None
    return p.insufficient(ctx.say("diagnosis.unreadable-some", refs=", ".join(unread)), unread)


def _uncovered(p: _Problems) -> Finding | None:
    """A primary immunodeficiency the list does not cover: one the list is silent on (newer
    codes) goes to the reviewer; one it leaves out is not met."""
    rule = p.ctx.params.diagnosis
    found = [
        c for c in p.active if p.every_pi.any_match(c.codings) and not p.broad.any_match(c.codings)
    ]
    silent_vs = p.ctx.kn.vs(rule.silent_valueset) if rule.silent_valueset else None
    silent = [c for c in found if silent_vs is not None and silent_vs.any_match(c.codings)]
    if silent and silent_vs is not None:
        codes = p.codes(silent_vs, silent)
        return p.insufficient(
            p.ctx.say("diagnosis.list-silent", codes=codes, revision=rule.list_revision),
            [c.ref for c in silent],
            (p.ctx.say.need("diagnosis.missing-list-silent", codes=codes),),
        )
    if not found:
        return None
    return Finding(
        CID,
        Status.NOT_MET,
        p.ctx.say("diagnosis.not-covered", codes=p.codes(p.every_pi, found)),
        tuple(c.ref for c in found),
        p.missing,
    )


_LADDER: tuple[Callable[[_Problems], Finding | None], ...] = (
    _covered,
    _provisional,
    _broad,
    _not_read,
    _uncovered,
)


def decide(ctx: Context) -> Finding:
    rule = ctx.params.diagnosis
    kn = ctx.kn
    problems = _Problems(
        ctx,
        [c for c in ctx.record.conditions if c.active],
        kn.vs(rule.valueset),
        kn.vs(rule.valueset.split("|")[0]),
        kn.vs(rule.broad_valueset),
        (ctx.say.need("diagnosis.missing"),),
    )
    for rung in _LADDER:
        found = rung(problems)
        if found is not None:
            return found
    return Finding(CID, Status.NOT_MET, ctx.say("diagnosis.not-met"), (), problems.missing)
