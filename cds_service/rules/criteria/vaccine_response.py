"""Impaired polysaccharide response: serotype titers drawn in the post-vaccination window, not on
IG and not after a conjugate vaccine, protective in fewer than the age band's share of
serotypes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cds_service.domain import (
    Finding,
    Measurement,
    Missing,
    Phase,
    Status,
    When,
)
from cds_service.knowledge.policy import VaccineResponseParams
from cds_service.rules.context import (
    Context,
    age_years,
    dated_measurements,
    fmt,
    unique_refs,
)


def _in_response_window(
    ctx: Context, rule: VaccineResponseParams, vaccine: When, after: list[Measurement]
) -> tuple[list[Measurement], str]:
    """Titers drawn in the post-vaccination window the source gives, with no conjugate vaccine
    between the polysaccharide vaccine and the sample; and why none is, when none is. A partial
    date ('2025-06') counts only when every day it may mean falls in the window."""
    lo, hi = rule.post_vaccine_window_days.min, rule.post_vaccine_window_days.max
    conjugates = [
        i.when.date
        for i in ctx.record.immunizations
        if i.kind == "conjugate" and i.when is not None and i.when.last > vaccine.date
    ]
    say, cid = ctx.say, "vaccine-response"
    inside: list[Measurement] = []
    reasons: list[str] = []
    for m in after:
        assert m.when is not None
        shortest = (m.when.date - vaccine.last).days
        longest = (m.when.last - vaccine.date).days
        between = [d for d in conjugates if d <= m.when.last]
        if between:
            reasons.append(say(f"{cid}.conjugate-between", date=str(min(between))))
        elif shortest < lo or longest > hi:
            days = f"{shortest}" if shortest == longest else f"{max(shortest, 0)}-{longest}"
            reasons.append(
                say(f"{cid}.outside-window", days=days, lo=lo // 7, hi=hi // 7, date=str(vaccine))
            )
        else:
            inside.append(m)
    return inside, " ".join(dict.fromkeys(reasons))


@dataclass(frozen=True)
class _Titers:
    """Serotype titer results read for the response: usable (a value in ug/mL or mg/L) or not."""

    usable: list[Measurement]
    unusable: list[Measurement]


def _titers(ctx: Context, rule: VaccineResponseParams) -> _Titers:
    accepted_units = set(rule.titer_units)
    # dated, and a serotype read by the record builder or a code in the titer value set
    in_vs = {id(m) for m in dated_measurements(ctx.record, ctx.kn.vs(rule.titer_valueset))}
    coded = [
        m
        for m in ctx.record.measurements
        if m.when is not None and (m.serotype is not None or id(m) in in_vs)
    ]
    usable: list[Measurement] = []
    unusable: list[Measurement] = []
    for m in coded:  # one pass: usable or not is a property of the result alone
        (usable if m.value is not None and m.unit in accepted_units else unusable).append(m)
    return _Titers(usable, unusable)


def _choose_vaccine(
    ctx: Context, rule: VaccineResponseParams, vaccines: list[Any], titers: list[Measurement]
) -> tuple[Any, list[Measurement], list[Measurement], str]:
    """The latest PPSV23 whose post-vaccination window holds titers (a later dose recorded after
    the sample does not hide the response already measured); else the latest, for the reason.
    Returns (vaccine, titers after it, titers in its window, why none is)."""
    chosen = None
    for candidate in reversed(vaccines):
        after = [m for m in titers if m.when is not None and m.when.last > candidate.when.date]
        post, why = _in_response_window(ctx, rule, candidate.when, after)
        if post:
            return candidate, after, post, why
        chosen = chosen or (candidate, after, post, why)
    assert chosen is not None
    return chosen


def _latest_per_serotype(post: list[Measurement], titer_vs: Any) -> dict[str, Measurement]:
    by_serotype: dict[str, Measurement] = {}
    for m in sorted(post, key=lambda m: (m.when.date if m.when else dt.date.min, m.ref)):
        serotype = m.serotype or next(
            (titer_vs.serotypes[c] for c in m.codings if c in titer_vs.serotypes), m.ref
        )
        by_serotype[serotype] = m  # the latest result per serotype
    return by_serotype


def _unread_same_sample(
    unusable: list[Measurement], by_serotype: dict[str, Measurement]
) -> list[Measurement]:
    """Serotype results of the same sample that could not be read (text such as '> 4.5',
    another unit): they may be protective, so an 'impaired' count must hold with all of them
    protective."""
    same_sample = {m.when.date for m in by_serotype.values() if m.when is not None}
    return [
        m
        for m in unusable
        if m.when is not None
        and m.when.date in same_sample
        and (m.serotype or m.ref) not in by_serotype
    ]


def _fractions(ctx: Context, rule: VaccineResponseParams, vdate: dt.date) -> list[float]:
    """The protective share below which the response is impaired, for the age at vaccination;
    every band's when the age is unknown (decided only when they all agree)."""
    bands = rule.impaired_if_protective_fraction_below
    patient = ctx.record.patient
    if patient is not None and patient.birth_date is not None:
        years = age_years(patient.birth_date, vdate)
        band = next((r.fraction for r in bands if years >= r.min_age_years), None)
        if band is not None:
            return [band]
    return [r.fraction for r in bands]


CID = "vaccine-response"


@dataclass(frozen=True)
class _Sample:
    """The titers the response is judged on: one per serotype, drawn in the window after the
    chosen PPSV23, not on IG; with the results of the same draw that could not be read."""

    vaccine: Any  # the ImmunizationFact
    vdate: dt.date
    phases: dict[int, Phase]  # by id() of each titer in the window
    by_serotype: dict[str, Measurement]
    post: list[Measurement]
    unusable: list[Measurement]


def _sample(ctx: Context, rule: VaccineResponseParams) -> Finding | _Sample:
    """The sample to judge, or why there is none to judge (no vaccine, titers outside the
    window, all on IG, too few serotypes): documentation missing, never not met."""
    missing = (ctx.say.need(f"{CID}.missing"),)
    vaccines = _polysaccharide_vaccines(ctx)
    read = _titers(ctx, rule)
    titers, unusable = read.usable, read.unusable
    if not vaccines:
        return _no_vaccine(ctx, titers, missing)
    vaccine, after, post, why_not = _choose_vaccine(ctx, rule, vaccines, titers)
    if after and not post:
        refs = (vaccine.ref, *unique_refs(m.ref for m in after))
        return Finding(CID, Status.INSUFFICIENT, why_not, refs, missing)
    phases, on_ig, post = _split_on_treatment(ctx, post)
    if on_ig and not post:
        refs = (vaccine.ref, *unique_refs(m.ref for m in on_ig))
        return Finding(CID, Status.INSUFFICIENT, ctx.say(f"{CID}.on-treatment"), refs, missing)
    by_serotype = _latest_per_serotype(post, ctx.kn.vs(rule.titer_valueset))
    if len(by_serotype) < rule.min_serotypes:
        return _too_few(ctx, rule, vaccine.ref, len(by_serotype), post, unusable, missing)
    return _Sample(vaccine, vaccine.when.date, phases, by_serotype, post, unusable)


def _polysaccharide_vaccines(ctx: Context) -> list[Any]:
    """Dated polysaccharide (PPSV23) immunizations, oldest first: the later ones are tried
    first for a window holding titers."""
    return sorted(
        (i for i in ctx.record.immunizations if i.when is not None and i.kind == "polysaccharide"),
        key=lambda i: i.when.date if i.when else dt.date.min,
    )


def _no_vaccine(ctx: Context, titers: list[Measurement], missing: tuple[Missing, ...]) -> Finding:
    """No dated PPSV23: titers without the vaccine they answer, or nothing at all; a vaccine of
    unspecified kind on record may be the PPSV23, and that is said instead."""
    key = f"{CID}.no-vaccine" if titers else f"{CID}.none"
    if any(i.kind == "unspecified" for i in ctx.record.immunizations):
        key = f"{CID}.unspecified-vaccine"
    return Finding(
        CID, Status.INSUFFICIENT, ctx.say(key), unique_refs(m.ref for m in titers), missing
    )


def _split_on_treatment(
    ctx: Context, post: list[Measurement]
) -> tuple[dict[int, Phase], list[Measurement], list[Measurement]]:
    """Each window titer's treatment phase (by id()), those drawn on IG (infused antibody, not
    the patient's response) and the rest, which the response is judged on."""
    phases = {id(m): ctx.timeline.phase(m.when) for m in post}
    on_ig = [m for m in post if phases[id(m)] is Phase.ON_TREATMENT]
    off_ig = [m for m in post if phases[id(m)] is not Phase.ON_TREATMENT]
    return phases, on_ig, off_ig


def _too_few(
    ctx: Context,
    rule: VaccineResponseParams,
    vaccine_ref: str,
    tested: int,
    post: list[Measurement],
    unusable: list[Measurement],
    missing: tuple[Missing, ...],
) -> Finding:
    """Fewer serotypes than the source requires: too few tested, or (none usable) results in
    units that could not be read, naming those units."""
    key = f"{CID}.units" if unusable and not post else f"{CID}.too-few"
    units_seen = ", ".join(sorted({m.unit or "none" for m in unusable}))
    return Finding(
        CID,
        Status.INSUFFICIENT,
        ctx.say(key, tested=tested, min=rule.min_serotypes, units=units_seen),
        (vaccine_ref, *unique_refs(m.ref for m in [*post, *unusable])),
        missing,
    )


def decide(ctx: Context) -> Finding:
    rule = ctx.params.vaccine_response
    say = ctx.say
    sample = _sample(ctx, rule)
    if isinstance(sample, Finding):
        return sample
    by_serotype, tested = sample.by_serotype, len(sample.by_serotype)
    cutoff = rule.protective_titer_ug_ml
    protective = sum(1 for m in by_serotype.values() if (m.value or 0.0) >= cutoff)
    fractions = _fractions(ctx, rule, sample.vdate)
    evidence = (sample.vaccine.ref, *sorted(unique_refs(m.ref for m in by_serotype.values())))
    share = protective / tested
    fields = {
        "protective": protective,
        "tested": tested,
        "cutoff": fmt(cutoff),
        "date": str(sample.vdate),
        "fraction": round(max(fractions) * 100),
    }
    impaired = all(share < f for f in fractions)
    unread = _unread_same_sample(sample.unusable, by_serotype)
    if unread and impaired:
        best = (protective + len(unread)) / (tested + len(unread))
        if not all(best < f for f in fractions):
            return Finding(
                CID,
                Status.INSUFFICIENT,
                say(f"{CID}.unread-titers", count=len(unread), **fields),
                (*evidence, *unique_refs(m.ref for m in unread)),
                (say.need(f"{CID}.missing"),),
            )
    if impaired:
        return Finding(CID, Status.MET, say(f"{CID}.met", **fields), evidence)
    if any(share < f for f in fractions):
        fields["fraction"] = round(min(fractions) * 100)
        return Finding(
            CID,
            Status.INSUFFICIENT,
            say(f"{CID}.age-unknown", **fields, high=round(max(fractions) * 100)),
            evidence,
            (say.need("age.missing"),),
        )
    return _normal_looking(ctx, sample.vdate, fields, evidence, sample.phases, by_serotype)


def _normal_looking(
    ctx: Context,
    vdate: dt.date,
    fields: dict[str, Any],
    evidence: tuple[str, ...],
    phases: dict[int, Phase],
    by_serotype: dict[str, Measurement],
) -> Finding:
    """A normal-looking response is not-met only when it can be the patient's own response to
    the polysaccharide: not infused antibody, not primed by a conjugate vaccine."""
    cid, say = "vaccine-response", ctx.say
    missing = (say.need(f"{cid}.missing"),)
    if any(phases[id(m)] is Phase.UNKNOWN for m in by_serotype.values()):
        # IG therapy began on an undocumented date: the titers may be infused antibody
        return Finding(
            cid, Status.INSUFFICIENT, say(f"{cid}.maybe-passive", **fields), evidence, missing
        )
    # a conjugate vaccine before the PPSV23 primes most of the serotypes tested: a normal
    # response is then not a polysaccharide response (Hansen 2021: prior PCV non-compliant)
    primed = [
        i
        for i in ctx.record.immunizations
        if i.kind == "conjugate" and i.when is not None and i.when.date <= vdate
    ]
    if primed:
        first = min(primed, key=lambda i: i.when.date if i.when else dt.date.max)
        return Finding(
            cid,
            Status.INSUFFICIENT,
            say(f"{cid}.conjugate-before", **fields, pcv_date=str(first.when)),
            (*evidence, first.ref),
            missing,
        )
    return Finding(cid, Status.NOT_MET, say(f"{cid}.not-met", **fields), evidence)
