"""Secondary causes excluded: denies only where the source says a cause lowers IgG at that
exposure; asks for the review or the test that decides otherwise (policy secondary-causes-
excluded, codes.yaml exposure rules).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cds_service import units
from cds_service.domain import (
    ConditionFact,
    DrugExposure,
    Finding,
    Measurement,
    Missing,
    Phase,
    Status,
    When,
)
from cds_service.knowledge import Knowledge, ValueSet
from cds_service.knowledge.policy import ProteinLossParams, SecondaryCausesParams
from cds_service.rules.context import (
    Context,
    dated_measurements,
    display,
    fmt,
    latest_measurement,
    months_before,
    qualitative,
)

CID = "secondary-causes-excluded"
MEDICATION_KEYS = ("medicationRequests", "medicationStatements", "medicationAdministrations")


UNREAD_BLOCKS_EXCLUSION = frozenset(
    {
        "Condition",
        "Medication",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        "MedicationDispense",
    }
)


@dataclass
class _Open:
    """What keeps secondary causes from being excluded: gaps (reason), missing items, evidence."""

    gaps: list[str]
    missing: list[Missing]
    evidence: list[str]

    def add(self, gap: str, missing: Missing | None, refs: Iterable[str] = ()) -> None:
        self.gaps.append(gap)
        # the same item once (by key and wording: two items may read alike, never merge them)
        if missing is not None and all(
            (m.key, str(m)) != (missing.key, str(missing)) for m in self.missing
        ):
            self.missing.append(missing)
        self.evidence.extend(r for r in refs if r not in self.evidence)


def _qualifying_low_igg(ctx: Context) -> When | None:
    """The date of the pre-treatment IgG the determination rests on (the latest baseline)."""
    baseline = [
        p.result
        for p in ctx.timeline.labs
        if p.phase is Phase.BASELINE and p.result.value_mg_dl is not None
    ]
    return baseline[-1].when if baseline else None


def _started_after(d: DrugExposure, low: When | None) -> bool:
    """The drug's first documented exposure is after the low IgG (so it cannot explain it)."""
    first = d.start or d.when
    return low is not None and first is not None and first.date > low.last


def _hiv_result(ctx: Context, rule: SecondaryCausesParams, hiv: Measurement | None) -> str | None:
    """'positive' / 'negative' / None for the latest HIV testing day; results of that day that
    disagree (a reactive screen, a negative supplemental test) are 'discordant': the testing
    algorithm continues (HIV-1 NAT), it neither excludes nor establishes HIV."""
    if hiv is None or hiv.when is None:
        return qualitative(hiv, ctx.kn) if hiv else None
    vs = ctx.kn.vs(rule.hiv_test_valueset)
    same_day = [
        m
        for m in dated_measurements(ctx.record, vs)
        if m.when is not None and m.when.date == hiv.when.date
    ]
    results = {qualitative(m, ctx.kn) for m in same_day}
    if {"positive", "negative"} <= results:
        return "discordant"
    return qualitative(hiv, ctx.kn)


def _drug_window(d: DrugExposure, since: dt.date) -> str:
    """'in' the look-back (or still taken), 'out', 'undated', or 'partial' (a month/year date
    that may fall either side of the look-back's start)."""
    if d.when is None:
        return "undated"
    if d.ongoing or d.when.date >= since:
        return "in"
    return "partial" if since <= d.when.last else "out"


def _steroid_counts(d: DrugExposure, rule: SecondaryCausesParams) -> bool:
    """A corticosteroid record that is a course worth reviewing: systemic (or of unknown route),
    not a single administration, not a documented burst (policy corticosteroid)."""
    if d.route == "local" or d.single_dose:
        return False
    short = rule.corticosteroid.short_course_max_days
    return d.days is None or d.days > short


def _drug_rule(kn: Knowledge, d: DrugExposure) -> str:
    rule = kn.drug_rules.get(d.ingredient.lower()) or kn.drug_rules.get(d.name.lower())
    return rule.exposure if rule else "deny"


@dataclass(frozen=True)
class _Drugs:
    """The record's causative drugs, sorted by what the source says of each at its exposure."""

    since: dt.date  # start of the look-back
    windows: dict[str, str]  # ref -> in / out / undated / partial (see _drug_window)
    exposure: dict[str, str]  # ref -> deny / review / ... (codes.yaml exposure rules)
    deny: list[DrugExposure]  # drugs that lower IgG at any exposure, still to be placed in time


def _drugs(ctx: Context, rule: SecondaryCausesParams) -> _Drugs:
    """Each drug's exposure rule and look-back window. A depleting drug first given after the low
    IgG cannot have caused it, and an order that documents no administration (stopped) does not
    show exposure: both are asked about (review), not denied."""
    rec = ctx.record
    since = months_before(rec.today, rule.drug_lookback_months)
    windows = {d.ref: _drug_window(d, since) for d in rec.drugs}
    exposure = {d.ref: _drug_rule(ctx.kn, d) for d in rec.drugs}
    deny = [d for d in rec.drugs if exposure[d.ref] == "deny"]
    low_igg = _qualifying_low_igg(ctx)
    for d in deny:
        if _started_after(d, low_igg) or d.uncertain:
            exposure[d.ref] = "review"
    return _Drugs(since, windows, exposure, [d for d in deny if exposure[d.ref] == "deny"])


def _found_cause(
    ctx: Context,
    rule: SecondaryCausesParams,
    causes: list[ConditionFact],
    drugs: _Drugs,
    hiv: Measurement | None,
    hiv_result: str | None,
) -> Finding | None:
    """Not met when a confirmed cause is on record: a condition, a drug that lowers IgG taken in
    the look-back, or a positive HIV test (in that order)."""
    cid, say = CID, ctx.say
    if causes:
        names = ", ".join(sorted({_cause_name(ctx.kn, rule, c) for c in causes}))
        return Finding(
            cid,
            Status.NOT_MET,
            say(f"{cid}.not-met-condition", names=names),
            tuple(c.ref for c in causes),
        )
    denied = [d for d in drugs.deny if drugs.windows[d.ref] == "in"]
    if denied:
        names = ", ".join(sorted({d.name for d in denied}))
        return Finding(
            cid,
            Status.NOT_MET,
            say(f"{cid}.not-met-drug", months=rule.drug_lookback_months, names=names),
            tuple(d.ref for d in denied),
        )
    if hiv is not None and hiv_result == "positive":
        return Finding(
            cid, Status.NOT_MET, say(f"{cid}.not-met-hiv", date=str(hiv.when)), (hiv.ref,)
        )
    return None


def _stated_no_medications(ctx: Context, since: dt.date) -> bool:
    """The record states, within the look-back, that the patient takes no medications."""
    none = ctx.record.no_medications
    return none is not None and none.when is not None and none.when.last >= since


def _open_records(ctx: Context, drugs: _Drugs, open_: _Open) -> None:
    """Gaps in the records the exclusion rests on. A medication list that holds nothing but IG
    (or could not be read) shows no review of the drugs that lower IgG, unless it states that
    the patient takes no medications; a Condition or medication record that could not be read
    may be the cause: never treated as excluded (contract)."""
    rec, say = ctx.record, ctx.say
    reviewed = bool(rec.other_medications) or _stated_no_medications(ctx, drugs.since)
    if not reviewed or any(k in rec.unavailable for k in MEDICATION_KEYS):
        open_.missing.append(say.need(f"{CID}.missing-drug-review"))
    unread = sorted({i.ref for i in rec.issues if i.ref.split("/")[0] in UNREAD_BLOCKS_EXCLUSION})
    if unread:
        open_.add(
            say(f"{CID}.gap-unreadable", refs=", ".join(unread)),
            say.need(f"{CID}.missing-unreadable"),
            unread,
        )


def _met(
    ctx: Context,
    drugs: _Drugs,
    hiv: Measurement | None,
    workups: list[Measurement],
    cleared: list[tuple[str, tuple[str, ...]]],
    evidence: tuple[str, ...],
) -> Finding:
    """Met: HIV excluded, the work-up done, every open item closed; the reason names what was
    cleared and on which records."""
    rec, say = ctx.record, ctx.say
    workup_date = max(str(m.when) for m in workups)
    reason: str = say(f"{CID}.met", hiv_date=str(hiv.when if hiv else ""), workup_date=workup_date)
    none = rec.no_medications
    if none is not None and _stated_no_medications(ctx, drugs.since) and not rec.other_medications:
        reason += " " + say(f"{CID}.no-medications", date=str(none.when or ""))
        evidence += (none.ref,)
    for text, refs in cleared:
        reason += " " + text
        evidence += refs
    return Finding(CID, Status.MET, reason, evidence)


def decide(ctx: Context) -> Finding:
    rule = ctx.params.secondary_causes_excluded
    kn, rec = ctx.kn, ctx.record
    active = _active_conditions(ctx)
    candidates = _cause_candidates(ctx, rule, active)
    drugs = _drugs(ctx, rule)
    hiv = latest_measurement(rec, kn.vs(rule.hiv_test_valueset))
    hiv_result = _hiv_result(ctx, rule, hiv)
    causes = [c for c in candidates if c.confirmed]
    found = _found_cause(ctx, rule, causes, drugs, hiv, hiv_result)
    if found is not None:
        return found
    open_ = _Open([], [], [])
    _open_drugs(ctx, rule, open_, drugs.deny, drugs.windows, drugs.exposure)
    _open_suspected(ctx, rule, candidates, open_)
    _open_review_conditions(ctx, rule, active, open_)
    _open_hiv_inconclusive(ctx, rule, active, hiv, hiv_result, open_)
    cleared = _open_protein_loss(ctx, rule, active, open_)
    workups = _open_workup(ctx, rule, hiv, hiv_result, open_)
    _open_records(ctx, drugs, open_)
    evidence = tuple(
        dict.fromkeys([*(m.ref for m in ([hiv] if hiv else []) + workups), *open_.evidence])
    )
    if open_.gaps or open_.missing:
        return _insufficient(ctx, open_, evidence)
    return _met(ctx, drugs, hiv, workups, cleared, evidence)


def _active_conditions(ctx: Context) -> list[ConditionFact]:
    """Active conditions other than a covered PI code: that code (e.g. XLA D80.0, also listed
    among genetic causes) is the diagnosis itself, not a secondary cause."""
    pi = ctx.kn.vs(ctx.params.diagnosis.valueset)
    return [c for c in ctx.record.conditions if c.active and not pi.any_match(c.codings)]


def _cause_candidates(
    ctx: Context, rule: SecondaryCausesParams, active: list[ConditionFact]
) -> list[ConditionFact]:
    """Active conditions coded as a secondary cause, confirmed or only suspected."""
    cause_sets = [ctx.kn.vs(v) for v in rule.condition_valuesets.values()]
    return [c for c in active if any(vs.any_match(c.codings) for vs in cause_sets)]


def _open_suspected(
    ctx: Context, rule: SecondaryCausesParams, candidates: list[ConditionFact], open_: _Open
) -> None:
    """A secondary cause that is suspected, not confirmed, neither denies nor is excluded: it
    asks for the work-up that settles it."""
    suspected = [c for c in candidates if not c.confirmed]
    if suspected:
        names = ", ".join(sorted({_cause_name(ctx.kn, rule, c) for c in suspected}))
        open_.add(
            ctx.say(f"{CID}.gap-suspected", names=names),
            ctx.say.need(f"{CID}.missing-suspected", names=names),
            (c.ref for c in suspected),
        )


def _insufficient(ctx: Context, open_: _Open, evidence: tuple[str, ...]) -> Finding:
    """Insufficient: the gaps in one reason (the drug review when only it is missing) and every
    missing item."""
    say = ctx.say
    gaps = "; ".join(open_.gaps) or say(f"{CID}.missing-drug-review")
    return Finding(
        CID,
        Status.INSUFFICIENT,
        say(f"{CID}.insufficient", gaps=gaps),
        evidence,
        tuple(open_.missing),
    )


def _open_drugs(
    ctx: Context,
    rule: SecondaryCausesParams,
    open_: _Open,
    deny: list[DrugExposure],
    windows: dict[str, str],
    exposure: dict[str, str],
) -> None:
    """Causative drugs that leave the exclusion open: undated or partly dated depleting drugs,
    and drugs whose source supports only a review (steroid courses beyond a burst included)."""
    _open_undated_drugs(ctx, rule, open_, deny, windows)
    course = _steroid_courses(ctx, rule, windows, exposure)
    review = [
        d
        for d in ctx.record.drugs
        if windows[d.ref] != "out" and _needs_review(d, rule, exposure[d.ref], course)
    ]
    if review:
        names = ", ".join(sorted({d.name for d in review}))
        open_.add(
            ctx.say(f"{CID}.gap-review-drug", names=names, months=rule.drug_lookback_months),
            ctx.say.need(f"{CID}.missing-review-drug", names=names),
            (d.ref for d in review),
        )


def _open_undated_drugs(
    ctx: Context,
    rule: SecondaryCausesParams,
    open_: _Open,
    deny: list[DrugExposure],
    windows: dict[str, str],
) -> None:
    """Depleting drugs with no date, then those dated only to a month or year that may fall
    before the look-back: neither can be placed in it, so the dates are asked for."""
    say, months = ctx.say, rule.drug_lookback_months
    undated = [d for d in deny if windows[d.ref] == "undated"]
    partial = [d for d in deny if windows[d.ref] == "partial"]
    if undated:
        names = ", ".join(sorted({d.name for d in undated}))
        open_.add(
            say(f"{CID}.gap-undated-drug", names=names),
            say.need(f"{CID}.missing-undated-drug", names=names, months=months),
            (d.ref for d in undated),
        )
    if partial:
        names = ", ".join(sorted({d.name for d in partial}))
        open_.add(
            say(f"{CID}.gap-partial-drug", names=names, months=months),
            say.need(f"{CID}.missing-undated-drug", names=names, months=months),
            (d.ref for d in partial),
        )


def _steroid_courses(
    ctx: Context,
    rule: SecondaryCausesParams,
    windows: dict[str, str],
    exposure: dict[str, str],
) -> set[str]:
    """Steroids (by ingredient) given as single systemic administrations in the look-back on
    more days than a burst: together they are a course, not a burst."""
    short = rule.corticosteroid.short_course_max_days
    given_days: dict[str, set[dt.date]] = {}
    for d in ctx.record.drugs:
        if (
            exposure[d.ref] == "corticosteroid"
            and d.single_dose
            and d.route != "local"
            and d.when is not None
            and windows[d.ref] == "in"
        ):
            given_days.setdefault(d.ingredient, set()).add(d.when.date)
    return {name for name, days in given_days.items() if len(days) > short}


def _needs_review(
    d: DrugExposure, rule: SecondaryCausesParams, exposure: str, course: set[str]
) -> bool:
    """The source supports only a review of this drug: a review drug, a steroid course beyond a
    burst, or a single steroid administration that is part of such a course."""
    if exposure == "review":
        return True
    if exposure != "corticosteroid":
        return False
    return _steroid_counts(d, rule) or (d.single_dose and d.ingredient in course)


def _open_review_conditions(
    ctx: Context, rule: SecondaryCausesParams, active: list[ConditionFact], open_: _Open
) -> None:
    """Conditions the source links to low IgG only sometimes: a review, never a denial."""
    kn, say, cid = ctx.kn, ctx.say, "secondary-causes-excluded"
    sets = {kind: kn.vs(v) for kind, v in rule.review_condition_valuesets.items()}
    found = [(kind, c) for c in active for kind, vs in sets.items() if vs.any_match(c.codings)]
    if found:
        names = ", ".join(sorted({f"{kind} {display(kn, sets[kind], c)}" for kind, c in found}))
        open_.add(
            say(f"{cid}.gap-review-condition", names=names),
            say.need(f"{cid}.missing-review-condition", names=names),
            (c.ref for _, c in found),
        )


def _open_hiv_inconclusive(
    ctx: Context,
    rule: SecondaryCausesParams,
    active: list[ConditionFact],
    hiv: Measurement | None,
    hiv_result: str | None,
    open_: _Open,
) -> None:
    """Inconclusive HIV serology (R75) is not HIV: it asks for the confirmatory test, unless a
    negative test is dated on or after it."""
    vs = ctx.kn.vs(rule.hiv_inconclusive_valueset)
    for c in active:
        if not vs.any_match(c.codings):
            continue
        resolved = (
            hiv is not None
            and hiv_result == "negative"
            and hiv.when is not None
            and (c.when is None or hiv.when.date >= c.when.date)
        )
        if not resolved:
            cid = "secondary-causes-excluded"
            open_.add(
                ctx.say(f"{cid}.gap-hiv-inconclusive", code=display(ctx.kn, vs, c)),
                ctx.say.need(f"{cid}.missing-hiv-confirmatory"),
                (c.ref,),
            )


@dataclass(frozen=True)
class _ProteinLoss:
    """The protein-losing conditions on record and the latest tests that decide them, read once
    so each step below judges the same evidence."""

    spec: ProteinLossParams
    names: str  # the conditions, as named in every sentence
    refs: tuple[str, ...]  # the conditions' records, cited by every outcome
    a1at: Measurement | None
    a1at_state: str | None  # see _a1at_state; None without a stool A1AT
    urine: Measurement | None
    per_day: float | None  # urine protein in g/day; None if absent or in an unknown unit
    albumin: Measurement | None


def _protein_loss(
    ctx: Context, spec: ProteinLossParams, vs: ValueSet, conds: list[ConditionFact]
) -> _ProteinLoss:
    """The latest stool A1AT, urine protein and albumin in the look-back, beside the conditions."""
    kn, rec = ctx.kn, ctx.record
    names = ", ".join(sorted({display(kn, vs, c) for c in conds}))
    refs = tuple(c.ref for c in conds)
    since = months_before(rec.today, spec.lookback_months)
    a1at = latest_measurement(rec, kn.vs(spec.stool_a1at_valueset), since)
    urine = latest_measurement(rec, kn.vs(spec.urine_protein_valueset), since)
    albumin = latest_measurement(rec, kn.vs(spec.albumin_valueset), since)
    a1at_state = _a1at_state(a1at, kn, spec) if a1at is not None else None
    per_day = (
        units.urine_protein_g_per_day(urine.value, urine.unit)
        if urine is not None and urine.value is not None
        else None
    )
    return _ProteinLoss(spec, names, refs, a1at, a1at_state, urine, per_day, albumin)


def _open_protein_loss(
    ctx: Context, rule: SecondaryCausesParams, active: list[ConditionFact], open_: _Open
) -> list[tuple[str, tuple[str, ...]]]:
    """IBD, celiac disease and malabsorption lose protein only sometimes: the evidence decides.
    Elevated stool alpha-1-antitrypsin (flagged, or above the lab's upper limit) or
    nephrotic-range urine protein: protein loss is shown, review. A normal stool A1AT, or a
    normal albumin with nothing that could not be read beside it: no protein loss (cleared, said
    in the met reason). A low albumin: the test that decides is asked for; none: the evidence."""
    spec = rule.protein_loss_conditional
    vs = ctx.kn.vs(spec.valueset)
    conds = [c for c in active if vs.any_match(c.codings)]
    if not conds:
        return []
    pl = _protein_loss(ctx, spec, vs, conds)
    if _open_protein_loss_shown(ctx, pl, open_):
        return []
    if pl.a1at is not None and pl.a1at_state == "normal":
        text = ctx.say(f"{CID}.protein-loss-cleared-a1at", names=pl.names, date=str(pl.a1at.when))
        return [(text, (*pl.refs, pl.a1at.ref))]
    if _open_protein_loss_unreadable(ctx, pl, open_):
        return []
    return _protein_loss_by_albumin(ctx, pl, open_)


def _open_protein_loss_shown(ctx: Context, pl: _ProteinLoss, open_: _Open) -> bool:
    """An elevated stool A1AT, else nephrotic-range urine protein, shows protein loss: a review
    is asked for (True) and nothing else is weighed."""
    say = ctx.say
    if pl.a1at is not None and pl.a1at_state == "elevated":
        _add_protein_loss_shown(ctx, pl, open_, say(f"{CID}.test-a1at"), pl.a1at)
        return True
    urine, per_day = pl.urine, pl.per_day
    if (
        urine is not None
        and per_day is not None
        and per_day >= pl.spec.urine_protein_nephrotic_g_per_day
    ):
        test = say(f"{CID}.test-urine", value=fmt(round(per_day, 2)))
        _add_protein_loss_shown(ctx, pl, open_, test, urine)
        return True
    return False


def _add_protein_loss_shown(
    ctx: Context, pl: _ProteinLoss, open_: _Open, test: str, m: Measurement
) -> None:
    """The protein-loss review, citing the test that shows the loss."""
    open_.add(
        ctx.say(f"{CID}.gap-protein-loss-shown", names=pl.names, test=test, date=str(m.when)),
        ctx.say.need(f"{CID}.missing-protein-loss-review", names=pl.names),
        (*pl.refs, m.ref),
    )


def _open_protein_loss_unreadable(ctx: Context, pl: _ProteinLoss, open_: _Open) -> bool:
    """A stool A1AT or urine protein that could not be read may show the loss, so a normal
    albumin cannot clear it: a review is asked for (True)."""
    unreadable = [pl.a1at] if pl.a1at is not None and pl.a1at_state == "unknown" else []
    if pl.urine is not None and pl.per_day is None:
        unreadable.append(pl.urine)
    if not unreadable:
        return False
    open_.add(
        ctx.say(
            f"{CID}.gap-protein-loss-unreadable",
            names=pl.names,
            refs=", ".join(m.ref for m in unreadable),
        ),
        ctx.say.need(f"{CID}.missing-protein-loss-review", names=pl.names),
        (*pl.refs, *(m.ref for m in unreadable)),
    )
    return True


def _protein_loss_by_albumin(
    ctx: Context, pl: _ProteinLoss, open_: _Open
) -> list[tuple[str, tuple[str, ...]]]:
    """Last, the albumin: normal clears protein loss; low asks for the test that decides; none
    (or in an unknown unit) asks for the evidence."""
    say, albumin = ctx.say, pl.albumin
    g_dl = (
        units.albumin_to_g_dl(albumin.value, albumin.unit)
        if albumin is not None and albumin.value is not None
        else None
    )
    normal = pl.spec.albumin_normal_min_g_dl
    if albumin is not None and g_dl is not None and g_dl >= normal:
        text = say(
            f"{CID}.protein-loss-cleared",
            names=pl.names,
            value=fmt(round(g_dl, 2)),
            date=str(albumin.when),
        )
        return [(text, (*pl.refs, albumin.ref))]
    if albumin is not None and g_dl is not None:
        open_.add(
            say(
                f"{CID}.gap-protein-loss-low-albumin",
                names=pl.names,
                value=fmt(round(g_dl, 2)),
                date=str(albumin.when),
                normal=fmt(normal),
            ),
            say.need(f"{CID}.missing-protein-loss-test", names=pl.names),
            (*pl.refs, albumin.ref),
        )
        return []
    open_.add(
        say(f"{CID}.gap-protein-loss-unknown", names=pl.names, months=pl.spec.lookback_months),
        say.need(f"{CID}.missing-protein-loss-evidence", names=pl.names),
        pl.refs,
    )
    return []


def _a1at_state(m: Measurement, kn: Knowledge, spec: ProteinLossParams) -> str:
    """'elevated', 'normal' or 'unknown': by the lab's interpretation (or a positive/negative
    qualitative result), else against the lab's own upper limit."""
    if _flagged(m, kn.vs(spec.high_interpretation_valueset)) or qualitative(m, kn) == "positive":
        return "elevated"
    if _flagged(m, kn.vs(spec.normal_interpretation_valueset)) or qualitative(m, kn) == "negative":
        return "normal"
    if m.value is not None and m.range_high is not None:
        return "elevated" if m.value > m.range_high else "normal"
    return "unknown"


def _flagged(m: Measurement, vs: ValueSet) -> bool:
    """An interpretation in the value set; a bare code (labs often omit the v3 system) too."""
    bare = {code for _, code in vs.exact}
    return vs.any_match(m.interpretation) or any(
        system is None and code in bare for system, code in m.interpretation
    )


def _open_workup(
    ctx: Context,
    rule: SecondaryCausesParams,
    hiv: Measurement | None,
    hiv_result: str | None,
    open_: _Open,
) -> list[Measurement]:
    """HIV test and malignancy work-up (CBC with differential and protein electrophoresis)."""
    kn, rec, say, cid = ctx.kn, ctx.record, ctx.say, "secondary-causes-excluded"
    if hiv is None:
        open_.add(say(f"{cid}.gap-hiv"), say.need(f"{cid}.missing-hiv"))
    elif hiv_result == "discordant":
        open_.add(
            say(f"{cid}.gap-hiv-discordant", date=str(hiv.when)),
            say.need(f"{cid}.missing-hiv-confirmatory"),
        )
    elif hiv_result != "negative":
        open_.add(say(f"{cid}.gap-hiv-unclear", date=str(hiv.when)), say.need(f"{cid}.missing-hiv"))
    workup_months = rule.workup_lookback_months
    workup_since = months_before(rec.today, workup_months)
    found = {
        v: latest_measurement(rec, kn.vs(v), workup_since) for v in rule.malignancy_workup_valuesets
    }
    workups = [m for m in found.values() if m is not None]
    if not workups:
        open_.add(say(f"{cid}.gap-workup", months=workup_months), say.need(f"{cid}.missing-workup"))
    elif rule.workup_requires_all and len(workups) < len(found):
        absent = [v for v, m in found.items() if m is None]
        what = ", ".join(say(f"{cid}.workup-name.{v}") for v in absent)
        open_.add(
            say(f"{cid}.gap-workup-part", what=what, months=workup_months),
            say.need(f"{cid}.missing-workup"),
        )
    return workups


def _cause_name(kn: Knowledge, rule: SecondaryCausesParams, c: ConditionFact) -> str:
    """'malignancy: C91.10' - the kind of secondary cause and the code that documents it."""
    for kind, vid in rule.condition_valuesets.items():
        if kn.vs(vid).any_match(c.codings):
            return f"{kind} {display(kn, kn.vs(vid), c)}"
    return c.ref
