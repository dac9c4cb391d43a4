"""Medical-necessity criteria: one function per contract criterion id, driven by the policy file.

Each rule reads typed facts and returns a Finding (met / not-met / insufficient / not-applicable)
with the FHIR references it rests on and what documentation is missing. Absent data is
`insufficient`, never `met`; `not-met` needs documented evidence (a normal pre-treatment IgG, an
active secondary cause, an age below the limit...). Thresholds and windows come from the policy
file (cds_service/knowledge/policy-cvid-ig.yaml), wording from cards/reasons.yaml.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cds_service import units
from cds_service.domain import (
    ConditionFact,
    DrugExposure,
    Finding,
    Measurement,
    Outcome,
    Phase,
    Record,
    Status,
    When,
)
from cds_service.dosing import DoseCheck
from cds_service.knowledge import Knowledge, ValueSet
from cds_service.knowledge.policy import Criteria, SecondaryCausesParams, VaccineResponseParams
from cds_service.timeline import Timeline
from cds_service.wording import Wording

CRITERIA_ORDER = (
    "diagnosis",
    "age",
    "baseline-igg",
    "secondary-causes-excluded",
    "infection-history",
    "vaccine-response",
    "clinical-response",
    "trough-monitoring",
    "dose",
    "home-infusion",
)
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


@dataclass(frozen=True)
class Context:
    record: Record
    timeline: Timeline
    kn: Knowledge
    say: Wording
    dose: DoseCheck

    @property
    def continuation(self) -> bool:
        return self.timeline.on_therapy

    @property
    def params(self) -> Criteria:
        """The policy's typed parameters (knowledge/policy.py)."""
        return self.kn.criteria

    def unreadable(self, *keys: str) -> list[str]:
        return [k for k in keys if k in self.record.unavailable]


def months_before(day: dt.date, months: int) -> dt.date:
    return day - dt.timedelta(days=round(months * 30.44))


def age_years(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _fmt(value: float) -> str:
    return f"{value:g}"


# a code from the client's record shown in card text: code-shaped only (a prefix match such as
# J18 also matches "J18<markup>"), else the resource's reference
_CODE_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")


def _shown(hit: tuple[str, str] | None, ref: str) -> str:
    return hit[1] if hit and _CODE_SHAPE.match(hit[1]) else ref


def _display(kn: Knowledge, vs: ValueSet, c: ConditionFact) -> str:
    return _shown(vs.first_match(c.codings), c.ref)


# ---------------------------------------------------------------------------------------------


def diagnosis(ctx: Context) -> Finding:
    rule = ctx.params.diagnosis
    kn, say = ctx.kn, ctx.say
    covered = kn.vs(rule.valueset)
    every_pi = kn.vs(rule.valueset.split("|")[0])
    need_confirmed = rule.require_confirmed
    active = [c for c in ctx.record.conditions if c.active]
    hits = [
        c for c in active if covered.any_match(c.codings) and (c.confirmed or not need_confirmed)
    ]
    missing = (say("diagnosis.missing"),)
    if hits:
        codes = ", ".join(sorted({_display(kn, covered, c) for c in hits}))
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
        codes = ", ".join(sorted({_display(kn, covered, c) for c in provisional}))
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
                codes=", ".join(sorted({_display(kn, broad_vs, c) for c in broad})),
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
        codes = ", ".join(sorted({_display(kn, silent_vs, c) for c in silent}))
        return Finding(
            "diagnosis",
            Status.INSUFFICIENT,
            say("diagnosis.list-silent", codes=codes, revision=rule.list_revision),
            tuple(c.ref for c in silent),
            (say("diagnosis.missing-list-silent", codes=codes),),
        )
    if uncovered:
        codes = ", ".join(sorted({_display(kn, every_pi, c) for c in uncovered}))
        return Finding(
            "diagnosis",
            Status.NOT_MET,
            say("diagnosis.not-covered", codes=codes),
            tuple(c.ref for c in uncovered),
            missing,
        )
    return Finding("diagnosis", Status.NOT_MET, say("diagnosis.not-met"), (), missing)


def age(ctx: Context) -> Finding:
    patient = ctx.record.patient
    min_age = ctx.params.age.min_age_years
    if patient is None or patient.birth_date is None:
        return Finding(
            "age",
            Status.INSUFFICIENT,
            ctx.say("age.insufficient"),
            (patient.ref,) if patient else (),
            (ctx.say("age.missing"),),
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
                (ctx.say("age.missing"),),
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


def baseline_igg(ctx: Context) -> Finding:
    rule = ctx.params.baseline_igg
    threshold = rule.threshold_mg_dl
    tl = ctx.timeline
    say = ctx.say
    missing = [say("baseline-igg.missing")]
    if tl.start_undocumented:
        missing.append(say("baseline-igg.missing-start"))
    usable = [p for p in tl.labs if p.result.value_mg_dl is not None]
    baseline = [p for p in usable if p.phase is Phase.BASELINE]
    if baseline:
        latest = baseline[-1].result
        value = latest.value_mg_dl or 0.0
        low = _age_lower_limit(ctx, latest.when)
        low_label = say("baseline-igg.low-age-table")
        if not ctx.kn.igg_reference.verified:
            low_label += say("unverified")
        if latest.reference_low_mg_dl is not None and (
            low is None or rule.prefer_lab_reference_low
        ):
            low, low_label = latest.reference_low_mg_dl, say("baseline-igg.low-lab")
        date = str(latest.when)
        if value < threshold:
            why = say("baseline-igg.below-threshold", threshold=_fmt(threshold))
        elif low is not None and value <= low:
            why = say("baseline-igg.below-age", low=_fmt(low), low_label=low_label)
        elif low is None:  # neither the lab's range nor the patient's age: the 2 SD arm is open
            return Finding(
                "baseline-igg",
                Status.INSUFFICIENT,
                say(
                    "baseline-igg.age-unknown",
                    value=_fmt(value),
                    date=date,
                    threshold=_fmt(threshold),
                ),
                (latest.ref,),
                (say("age.missing"),),
            )
        else:
            return Finding(
                "baseline-igg",
                Status.NOT_MET,
                say(
                    "baseline-igg.not-met",
                    value=_fmt(value),
                    date=date,
                    threshold=_fmt(threshold),
                    low=_fmt(low),
                    low_label=low_label,
                ),
                (latest.ref,),
            )
        return Finding(
            "baseline-igg",
            Status.MET,
            say("baseline-igg.met", value=_fmt(value), date=date, why=why),
            (latest.ref,),
        )
    evidence = tuple(p.result.ref for p in usable) + tuple(tl.start_undocumented)
    if usable:
        if tl.start_undocumented:
            why = say("baseline-igg.why-undated")
        elif all(p.phase is Phase.ON_TREATMENT for p in usable):
            why = say("baseline-igg.why-on-treatment", start=str(tl.first_dose))
        elif tl.first_dose is None:  # no IG given: the results simply carry no date
            why = say("baseline-igg.why-no-date")
        else:  # undated, or on the day therapy began: not shown to precede it
            why = say("baseline-igg.why-not-before", start=str(tl.first_dose))
        values = ", ".join(f"{_fmt(p.result.value_mg_dl or 0)} mg/dL" for p in usable)
        reason = say("baseline-igg.not-baseline", count=len(usable), values=values, why=why)
        if tl.first_dose_ref:
            evidence += (tl.first_dose_ref,)
        return Finding("baseline-igg", Status.INSUFFICIENT, reason, evidence, tuple(missing))
    if tl.labs:
        valued = [p for p in tl.labs if p.result.has_value]
        units = ", ".join(sorted({p.result.unit or "none" for p in valued}))
        return Finding(
            "baseline-igg",
            Status.INSUFFICIENT,
            say("baseline-igg.unusable", units=units) if valued else say("baseline-igg.no-value"),
            tuple(p.result.ref for p in tl.labs),
            tuple(missing),
        )
    reason = say("baseline-igg.none")
    if ctx.unreadable("observations"):
        reason = say("unreadable", what="Lab results", keys="observations")
    return Finding("baseline-igg", Status.INSUFFICIENT, reason, (), tuple(missing))


def _age_lower_limit(ctx: Context, when: When | None) -> float | None:
    patient = ctx.record.patient
    if patient is None or patient.birth_date is None or when is None:
        return None
    born = patient.birth_date
    months = (  # completed months: a band boundary is not crossed before the day of the month
        (when.date.year - born.year) * 12
        + (when.date.month - born.month)
        - (when.date.day < born.day)
    )
    return ctx.kn.igg_reference.lower_limit(max(months, 0))


def latest_measurement(
    measurements: Iterable[Measurement], vs: ValueSet, since: dt.date | None = None
) -> Measurement | None:
    best: Measurement | None = None
    for m in measurements:
        if not vs.any_match(m.codings) or m.when is None:
            continue
        if since is not None and m.when.date < since:
            continue
        if best is None or (best.when is not None and m.when.date > best.when.date):
            best = m
    return best


def qualitative(m: Measurement, kn: Knowledge) -> str | None:
    """'positive' / 'negative' from a coded value, interpretation or text; None if unclear."""
    codes = (*m.value_code, *m.interpretation)
    if kn.vs("result-positive").any_match(codes):
        return "positive"
    if kn.vs("result-negative").any_match(codes):
        return "negative"
    text = (m.text or "").strip().lower()
    if text.startswith(("neg", "non-reactive", "nonreactive", "not detected")):
        return "negative"
    if text.startswith(("pos", "reactive", "detected")):
        return "positive"
    return None


@dataclass
class _Open:
    """What keeps secondary causes from being excluded: gaps (reason), missing items, evidence."""

    gaps: list[str]
    missing: list[str]
    evidence: list[str]

    def add(self, gap: str, missing: str | None, refs: Iterable[str] = ()) -> None:
        self.gaps.append(gap)
        if missing is not None and missing not in self.missing:
            self.missing.append(missing)
        self.evidence.extend(r for r in refs if r not in self.evidence)


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


def secondary_causes(ctx: Context) -> Finding:
    rule = ctx.params.secondary_causes_excluded
    kn, rec, say = ctx.kn, ctx.record, ctx.say
    cid = "secondary-causes-excluded"
    # a covered PI code (e.g. XLA D80.0, also listed among genetic causes) is the diagnosis itself
    pi = kn.vs(ctx.params.diagnosis.valueset)
    active = [c for c in rec.conditions if c.active and not pi.any_match(c.codings)]
    cause_sets = [kn.vs(v) for v in rule.condition_valuesets.values()]
    candidates = [c for c in active if any(vs.any_match(c.codings) for vs in cause_sets)]
    causes = [c for c in candidates if c.confirmed]
    if causes:
        names = ", ".join(sorted({_cause_name(kn, rule, c) for c in causes}))
        return Finding(
            cid,
            Status.NOT_MET,
            say(f"{cid}.not-met-condition", names=names),
            tuple(c.ref for c in causes),
        )
    drug_months = rule.drug_lookback_months
    since = months_before(rec.today, drug_months)
    windows = {d.ref: _drug_window(d, since) for d in rec.drugs}
    exposure = {d.ref: _drug_rule(kn, d) for d in rec.drugs}
    deny = [d for d in rec.drugs if exposure[d.ref] == "deny"]
    denied = [d for d in deny if windows[d.ref] == "in"]
    if denied:
        names = ", ".join(sorted({d.name for d in denied}))
        return Finding(
            cid,
            Status.NOT_MET,
            say(f"{cid}.not-met-drug", months=drug_months, names=names),
            tuple(d.ref for d in denied),
        )
    hiv = latest_measurement(rec.measurements, kn.vs(rule.hiv_test_valueset))
    hiv_result = qualitative(hiv, kn) if hiv else None
    if hiv is not None and hiv_result == "positive":
        return Finding(
            cid, Status.NOT_MET, say(f"{cid}.not-met-hiv", date=str(hiv.when)), (hiv.ref,)
        )
    open_ = _Open([], [], [])
    _open_drugs(ctx, rule, open_, deny, windows, exposure)
    suspected = [c for c in candidates if not c.confirmed]
    if suspected:
        names = ", ".join(sorted({_cause_name(kn, rule, c) for c in suspected}))
        open_.add(
            say(f"{cid}.gap-suspected", names=names),
            say(f"{cid}.missing-suspected", names=names),
            (c.ref for c in suspected),
        )
    _open_review_conditions(ctx, rule, active, open_)
    _open_hiv_inconclusive(ctx, rule, active, hiv, hiv_result, open_)
    cleared = _open_protein_loss(ctx, rule, active, open_)
    workups = _open_workup(ctx, rule, hiv, hiv_result, open_)
    # the drug exclusion rests on a medication list: one that holds nothing but IG (or could
    # not be read) shows no review of the drugs that lower IgG, unless the record states
    # explicitly that the patient takes no medications
    stated_none = rec.no_medications is not None and (
        rec.no_medications.when is not None and rec.no_medications.when.last >= since
    )
    reviewed = bool(rec.other_medications) or stated_none
    if not reviewed or any(k in rec.unavailable for k in MEDICATION_KEYS):
        open_.missing.append(say(f"{cid}.missing-drug-review"))
    # a Condition or medication record that could not be read may be the secondary cause:
    # data that could not be read is never treated as excluded (contract)
    unread = sorted({i.ref for i in rec.issues if i.ref.split("/")[0] in UNREAD_BLOCKS_EXCLUSION})
    if unread:
        open_.add(
            say(f"{cid}.gap-unreadable", refs=", ".join(unread)),
            say(f"{cid}.missing-unreadable"),
            unread,
        )
    evidence = tuple(
        dict.fromkeys([*(m.ref for m in ([hiv] if hiv else []) + workups), *open_.evidence])
    )
    if open_.gaps or open_.missing:
        gaps = "; ".join(open_.gaps) or say(f"{cid}.missing-drug-review")
        return Finding(
            cid,
            Status.INSUFFICIENT,
            say(f"{cid}.insufficient", gaps=gaps),
            evidence,
            tuple(open_.missing),
        )
    workup_date = max(str(m.when) for m in workups)
    reason = say(f"{cid}.met", hiv_date=str(hiv.when if hiv else ""), workup_date=workup_date)
    if rec.no_medications is not None and stated_none and not rec.other_medications:
        reason += " " + say(f"{cid}.no-medications", date=str(rec.no_medications.when or ""))
        evidence += (rec.no_medications.ref,)
    for text, refs in cleared:
        reason += " " + text
        evidence += refs
    return Finding(cid, Status.MET, reason, evidence)


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
    say, cid = ctx.say, "secondary-causes-excluded"
    months = rule.drug_lookback_months
    undated = [d for d in deny if windows[d.ref] == "undated"]
    partial = [d for d in deny if windows[d.ref] == "partial"]
    if undated:
        names = ", ".join(sorted({d.name for d in undated}))
        open_.add(
            say(f"{cid}.gap-undated-drug", names=names),
            say(f"{cid}.missing-undated-drug", names=names, months=months),
            (d.ref for d in undated),
        )
    if partial:
        names = ", ".join(sorted({d.name for d in partial}))
        open_.add(
            say(f"{cid}.gap-partial-drug", names=names, months=months),
            say(f"{cid}.missing-undated-drug", names=names, months=months),
            (d.ref for d in partial),
        )
    review = [
        d
        for d in ctx.record.drugs
        if windows[d.ref] != "out"
        and (
            exposure[d.ref] == "review"
            or (exposure[d.ref] == "corticosteroid" and _steroid_counts(d, rule))
        )
    ]
    if review:
        names = ", ".join(sorted({d.name for d in review}))
        open_.add(
            say(f"{cid}.gap-review-drug", names=names, months=months),
            say(f"{cid}.missing-review-drug", names=names),
            (d.ref for d in review),
        )


def _open_review_conditions(
    ctx: Context, rule: SecondaryCausesParams, active: list[ConditionFact], open_: _Open
) -> None:
    """Conditions the source links to low IgG only sometimes: a review, never a denial."""
    kn, say, cid = ctx.kn, ctx.say, "secondary-causes-excluded"
    sets = {kind: kn.vs(v) for kind, v in rule.review_condition_valuesets.items()}
    found = [(kind, c) for c in active for kind, vs in sets.items() if vs.any_match(c.codings)]
    if found:
        names = ", ".join(sorted({f"{kind} {_display(kn, sets[kind], c)}" for kind, c in found}))
        open_.add(
            say(f"{cid}.gap-review-condition", names=names),
            say(f"{cid}.missing-review-condition", names=names),
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
                ctx.say(f"{cid}.gap-hiv-inconclusive", code=_display(ctx.kn, vs, c)),
                ctx.say(f"{cid}.missing-hiv-confirmatory"),
                (c.ref,),
            )


def _open_protein_loss(
    ctx: Context, rule: SecondaryCausesParams, active: list[ConditionFact], open_: _Open
) -> list[tuple[str, tuple[str, ...]]]:
    """IBD, celiac disease and malabsorption lose protein only sometimes: the evidence decides.
    Elevated stool alpha-1-antitrypsin or nephrotic-range urine protein: protein loss is shown,
    review; low albumin: the test that decides is asked for; normal albumin: no protein loss
    (cleared, said in the met reason); no evidence: the evidence is asked for."""
    spec = rule.protein_loss_conditional
    kn, rec, say, cid = ctx.kn, ctx.record, ctx.say, "secondary-causes-excluded"
    vs = kn.vs(spec.valueset)
    conds = [c for c in active if vs.any_match(c.codings)]
    if not conds:
        return []
    names = ", ".join(sorted({_display(kn, vs, c) for c in conds}))
    refs = tuple(c.ref for c in conds)
    since = months_before(rec.today, spec.lookback_months)
    a1at = latest_measurement(rec.measurements, kn.vs(spec.stool_a1at_valueset), since)
    urine = latest_measurement(rec.measurements, kn.vs(spec.urine_protein_valueset), since)
    albumin = latest_measurement(rec.measurements, kn.vs(spec.albumin_valueset), since)
    per_day = (
        units.urine_protein_g_per_day(urine.value, urine.unit)
        if urine and urine.value is not None
        else None
    )
    if a1at is not None and _elevated(a1at, kn):
        open_.add(
            say(
                f"{cid}.gap-protein-loss-shown",
                names=names,
                test=say(f"{cid}.test-a1at"),
                date=str(a1at.when),
            ),
            say(f"{cid}.missing-protein-loss-review", names=names),
            (*refs, a1at.ref),
        )
        return []
    if (
        urine is not None
        and per_day is not None
        and per_day >= spec.urine_protein_nephrotic_g_per_day
    ):
        open_.add(
            say(
                f"{cid}.gap-protein-loss-shown",
                names=names,
                test=say(f"{cid}.test-urine", value=_fmt(round(per_day, 2))),
                date=str(urine.when),
            ),
            say(f"{cid}.missing-protein-loss-review", names=names),
            (*refs, urine.ref),
        )
        return []
    g_dl = (
        units.albumin_to_g_dl(albumin.value, albumin.unit)
        if albumin is not None and albumin.value is not None
        else None
    )
    normal = spec.albumin_normal_min_g_dl
    if albumin is not None and g_dl is not None and g_dl >= normal:
        text = say(
            f"{cid}.protein-loss-cleared",
            names=names,
            value=_fmt(round(g_dl, 2)),
            date=str(albumin.when),
        )
        return [(text, (*refs, albumin.ref))]
    if albumin is not None and g_dl is not None:
        open_.add(
            say(
                f"{cid}.gap-protein-loss-low-albumin",
                names=names,
                value=_fmt(round(g_dl, 2)),
                date=str(albumin.when),
                normal=_fmt(normal),
            ),
            say(f"{cid}.missing-protein-loss-test", names=names),
            (*refs, albumin.ref),
        )
        return []
    open_.add(
        say(f"{cid}.gap-protein-loss-unknown", names=names, months=spec.lookback_months),
        say(f"{cid}.missing-protein-loss-evidence", names=names),
        refs,
    )
    return []


def _elevated(m: Measurement, kn: Knowledge) -> bool:
    """A result flagged high / abnormal / positive by the lab."""
    high = {"H", "HH", "HU", "A", "AA"}
    if any(code in high for _, code in m.interpretation):
        return True
    return qualitative(m, kn) == "positive"


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
        open_.add(say(f"{cid}.gap-hiv"), say(f"{cid}.missing-hiv"))
    elif hiv_result != "negative":
        open_.add(say(f"{cid}.gap-hiv-unclear", date=str(hiv.when)), say(f"{cid}.missing-hiv"))
    workup_months = rule.workup_lookback_months
    workup_since = months_before(rec.today, workup_months)
    found = {
        v: latest_measurement(rec.measurements, kn.vs(v), workup_since)
        for v in rule.malignancy_workup_valuesets
    }
    workups = [m for m in found.values() if m is not None]
    if not workups:
        open_.add(say(f"{cid}.gap-workup", months=workup_months), say(f"{cid}.missing-workup"))
    elif rule.workup_requires_all and len(workups) < len(found):
        absent = [v for v, m in found.items() if m is None]
        what = ", ".join(say(f"{cid}.workup-name.{v}") for v in absent)
        open_.add(
            say(f"{cid}.gap-workup-part", what=what, months=workup_months),
            say(f"{cid}.missing-workup"),
        )
    return workups


def _cause_name(kn: Knowledge, rule: SecondaryCausesParams, c: ConditionFact) -> str:
    """'malignancy: C91.10' - the kind of secondary cause and the code that documents it."""
    for kind, vid in rule.condition_valuesets.items():
        if kn.vs(vid).any_match(c.codings):
            return f"{kind} {_display(kn, kn.vs(vid), c)}"
    return c.ref


@dataclass(frozen=True)
class Episode:
    ref: str
    label: str
    when: When | None


def infection_episodes(ctx: Context) -> list[Episode]:
    """Bacterial infection episodes from Conditions and Encounters, one per day (RULES.md):
    several Conditions or Encounters documenting the same day are one episode."""
    vs = ctx.kn.vs(ctx.params.infection_history.valueset)
    episodes: list[Episode] = []
    seen_days: set[dt.date] = set()

    def add(ref: str, label: str, when: When | None) -> None:
        if when is not None:
            if when.date in seen_days:
                return
            seen_days.add(when.date)
        episodes.append(Episode(ref, label, when))

    for c in ctx.record.conditions:
        if c.confirmed and vs.any_match(c.codings):  # a provisional infection is not documented
            add(c.ref, _display(ctx.kn, vs, c), c.when)
    for e in ctx.record.encounters:
        if vs.any_match(e.reason_codings):
            hit = vs.first_match(e.reason_codings)
            add(e.ref, _shown(hit, e.ref), e.when)
    return episodes


def infection_history(ctx: Context) -> Finding:
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
        names = ", ".join(f"{e.label} {e.when}" if e.when else e.label for e in before)
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
        (ctx.say("infection-history.missing"),),
    )


def _refs(refs: Iterable[str]) -> tuple[str, ...]:
    """References once each, in order (components of one panel share their panel's)."""
    return tuple(dict.fromkeys(refs))


def _in_response_window(
    ctx: Context, rule: VaccineResponseParams, vdate: dt.date, after: list[Measurement]
) -> tuple[list[Measurement], str]:
    """Titers drawn in the post-vaccination window the source gives, with no conjugate vaccine
    between the polysaccharide vaccine and the sample; and why none is, when none is."""
    lo, hi = rule.post_vaccine_window_days.min, rule.post_vaccine_window_days.max
    conjugates = [
        i.when.date
        for i in ctx.record.immunizations
        if i.kind == "conjugate" and i.when is not None and i.when.date > vdate
    ]
    say, cid = ctx.say, "vaccine-response"
    inside: list[Measurement] = []
    reasons: list[str] = []
    for m in after:
        assert m.when is not None
        days = (m.when.date - vdate).days
        between = [d for d in conjugates if d <= m.when.date]
        if between:
            reasons.append(say(f"{cid}.conjugate-between", date=str(min(between))))
        elif not lo <= days <= hi:
            reasons.append(
                say(f"{cid}.outside-window", days=days, lo=lo // 7, hi=hi // 7, date=str(vdate))
            )
        else:
            inside.append(m)
    return inside, " ".join(dict.fromkeys(reasons))


def vaccine_response(ctx: Context) -> Finding:
    rule = ctx.params.vaccine_response
    kn, rec, say, tl = ctx.kn, ctx.record, ctx.say, ctx.timeline
    cid = "vaccine-response"
    missing = (say(f"{cid}.missing"),)
    vaccines = sorted(
        (i for i in rec.immunizations if i.when is not None and i.kind == "polysaccharide"),
        key=lambda i: i.when.date if i.when else dt.date.min,
    )
    titer_vs = kn.vs(rule.titer_valueset)
    accepted_units = set(rule.titer_units)
    coded = [
        m
        for m in rec.measurements
        if (m.serotype is not None or titer_vs.any_match(m.codings)) and m.when is not None
    ]
    titers = [m for m in coded if m.value is not None and m.unit in accepted_units]
    usable = {id(m) for m in titers}  # by identity: `m not in titers` compared whole records
    unusable = [m for m in coded if id(m) not in usable]
    if not vaccines:
        key = f"{cid}.no-vaccine" if titers else f"{cid}.none"
        if any(i.kind == "unspecified" for i in rec.immunizations):
            key = f"{cid}.unspecified-vaccine"
        refs = _refs(m.ref for m in titers)
        return Finding(cid, Status.INSUFFICIENT, say(key), refs, missing)
    vaccine = vaccines[-1]
    vdate = vaccine.when.date if vaccine.when else dt.date.min
    after = [m for m in titers if m.when is not None and m.when.date > vdate]
    post, why_not = _in_response_window(ctx, rule, vdate, after)
    if after and not post:
        return Finding(
            cid,
            Status.INSUFFICIENT,
            why_not,
            (vaccine.ref, *_refs(m.ref for m in after)),
            missing,
        )
    phases = {id(m): tl.phase(m.when) for m in post}
    on_ig = [m for m in post if phases[id(m)] is Phase.ON_TREATMENT]
    post = [m for m in post if phases[id(m)] is not Phase.ON_TREATMENT]
    if on_ig and not post:
        return Finding(
            cid,
            Status.INSUFFICIENT,
            say(f"{cid}.on-treatment"),
            (vaccine.ref, *_refs(m.ref for m in on_ig)),
            missing,
        )
    by_serotype: dict[str, Measurement] = {}
    for m in sorted(post, key=lambda m: (m.when.date if m.when else dt.date.min, m.ref)):
        serotype = m.serotype or next(
            (titer_vs.serotypes[c] for c in m.codings if c in titer_vs.serotypes), m.ref
        )
        by_serotype[serotype] = m  # the latest result per serotype
    tested = len(by_serotype)
    if tested < rule.min_serotypes:
        key = f"{cid}.units" if unusable and not post else f"{cid}.too-few"
        units_seen = ", ".join(sorted({m.unit or "none" for m in unusable}))
        return Finding(
            cid,
            Status.INSUFFICIENT,
            say(key, tested=tested, min=rule.min_serotypes, units=units_seen),
            (vaccine.ref, *_refs(m.ref for m in [*post, *unusable])),
            missing,
        )
    cutoff = rule.protective_titer_ug_ml
    protective = sum(1 for m in by_serotype.values() if (m.value or 0.0) >= cutoff)
    bands = rule.impaired_if_protective_fraction_below
    patient = rec.patient
    if patient is not None and patient.birth_date is not None:
        years = age_years(patient.birth_date, vdate)
        band = next((r.fraction for r in bands if years >= r.min_age_years), None)
    else:
        band = None
    # age unknown, or no band for it (a vaccine dated before the birth date): decide only when
    # every age band gives the same answer
    fractions = [band] if band is not None else [r.fraction for r in bands]
    evidence = (vaccine.ref, *sorted(_refs(m.ref for m in by_serotype.values())))
    share = protective / tested
    fields = {
        "protective": protective,
        "tested": tested,
        "cutoff": _fmt(cutoff),
        "date": str(vdate),
        "fraction": round(max(fractions) * 100),
    }
    undated_start = any(phases[id(m)] is Phase.UNKNOWN for m in by_serotype.values())
    if all(share < f for f in fractions):
        return Finding(cid, Status.MET, say(f"{cid}.met", **fields), evidence)
    if any(share < f for f in fractions):
        fields["fraction"] = round(min(fractions) * 100)
        return Finding(
            cid,
            Status.INSUFFICIENT,
            say(f"{cid}.age-unknown", **fields, high=round(max(fractions) * 100)),
            evidence,
            (say("age.missing"),),
        )
    if undated_start:  # a normal-looking response may be infused antibody
        return Finding(
            cid, Status.INSUFFICIENT, say(f"{cid}.maybe-passive", **fields), evidence, missing
        )
    return Finding(cid, Status.NOT_MET, say(f"{cid}.not-met", **fields), evidence)


def clinical_response(ctx: Context) -> Finding:
    """Fewer bacterial infections per year on therapy than in a comparable period before it
    (policy clinical-response: the period lengths), not raw lifetime counts."""
    cid = "clinical-response"
    if not ctx.continuation:
        return Finding(cid, Status.NOT_APPLICABLE, ctx.say(f"{cid}.not-applicable"))
    rule, say = ctx.params.clinical_response, ctx.say
    missing = (say(f"{cid}.missing"),)
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
        why = say(f"{cid}.why-too-early", months=_fmt(round(on_months, 1)), min=min_on)
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
        "after_months": _fmt(round(on_months, 1)),
        "rate_before": _fmt(round(rate_before, 1)),
        "rate_after": _fmt(round(rate_after, 1)),
    }
    if rate_after < rate_before:
        return Finding(cid, Status.MET, say(f"{cid}.met", **fields), evidence)
    return Finding(cid, Status.NOT_MET, say(f"{cid}.not-met", **fields), evidence)


def trough_monitoring(ctx: Context) -> Finding:
    cid = "trough-monitoring"
    if not ctx.continuation:
        return Finding(cid, Status.NOT_APPLICABLE, ctx.say(f"{cid}.not-applicable"))
    months = ctx.params.trough_monitoring.interval_months
    missing = (ctx.say(f"{cid}.missing", months=months),)
    on_treatment = [
        p.result
        for p in ctx.timeline.labs
        if p.phase is Phase.ON_TREATMENT and p.result.value_mg_dl is not None
    ]
    hours = ctx.params.trough_monitoring.peak_window_hours
    peaks = {r.ref: hit for r in on_treatment if (hit := _after_infusion(ctx, r.when, hours))}
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
                hours=_fmt(hours),
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
                value=_fmt(latest.value_mg_dl or 0),
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


def _after_infusion(ctx: Context, when: When | None, hours: float) -> tuple[str, When] | None:
    """The IG administration a result was drawn shortly after (a peak, not a pre-infusion
    trough): timed values within `hours` after the infusion; a date-only result on a later day
    within the window. A result on the infusion's own day without times counts as drawn
    before it (a trough is drawn on infusion day, before the infusion)."""
    if when is None or hours <= 0:
        return None
    for e in ctx.timeline.exposures:
        start = e.start
        if e.kind != "MedicationAdministration" or start is None or start.end is not None:
            continue
        if when.instant is not None and start.instant is not None:
            gap = (when.instant - start.instant).total_seconds() / 3600.0
        else:
            days = (when.date - start.date).days
            if days == 0:
                continue
            gap = days * 24.0
        if 0 < gap <= hours:
            return e.ref, start
    return None


def _product_notes(ctx: Context) -> list[str]:
    """Label facts about the ordered product a reviewer should see next to the dose."""
    order, say = ctx.dose.order, ctx.say
    if order is None or not order.product_id:
        return []
    product = next((p for p in ctx.kn.products.products if p.id == order.product_id), None)
    if product is None:
        return []
    notes: list[str] = []
    if product.pi_indication is None and product.pi_indication_note:
        notes.append(say("dose.note-not-pi", product=product.name))
    patient = ctx.record.patient
    if product.min_age_pi_years is not None and patient and patient.birth_date:
        years = age_years(patient.birth_date, ctx.record.today)
        if years < product.min_age_pi_years:
            notes.append(
                say(
                    "dose.note-min-age",
                    product=product.name,
                    min_age=product.min_age_pi_years,
                    unverified="" if product.min_age_verified else say("unverified"),
                )
            )
    return notes


def dose(ctx: Context) -> Finding:
    d, say = ctx.dose, ctx.say
    months = ctx.params.dose.weight_recency_months
    order = d.order
    evidence = tuple(
        r for r in (order.ref if order else None, d.weight.ref if d.weight else None) if r
    )
    extra = _product_notes(ctx)
    if order is not None and order.dose_basis:
        extra.insert(0, say(f"dose.{order.dose_basis}", **dict(order.dose_basis_fields)))

    def finding(status: Status, reason: str, missing: tuple[str, ...] = ()) -> Finding:
        return Finding("dose", status, " ".join([reason, *extra]), evidence, missing)

    if order is not None and order.course_doses is not None:
        extra.insert(0, say("dose.basis-course", doses=_fmt(order.course_doses)))
    if (
        order is not None
        and order.mg_per_kg_dose is not None
        and order.interval_days is not None
        and d.weight is None
    ):
        return finding(
            Status.INSUFFICIENT,
            say(
                "dose.per-kg-no-weight",
                mgkg=_fmt(d.mg_per_kg_per_4_weeks or 0),
                months=months,
                lo=_fmt(d.low),
                hi=_fmt(d.high),
            ),
            (say("dose.missing-weight", months=months),),
        )
    if order is None or d.grams_per_dose is None or order.interval_days is None:
        return finding(Status.INSUFFICIENT, say("dose.no-dose"), (say("dose.missing-dose"),))
    fields = {
        "grams": d.grams_per_dose,
        "interval": round(order.interval_days, 1),
        "lo": _fmt(d.low),
        "hi": _fmt(d.high),
        "route": say(f"dose.route.{d.range_route or order.route or 'unknown'}"),
    }
    if d.weight is None or d.mg_per_kg_per_4_weeks is None:
        return finding(
            Status.INSUFFICIENT,
            say("dose.no-weight", months=months, **fields),
            (say("dose.missing-weight", months=months),),
        )
    fields |= {"mgkg": d.mg_per_kg_per_4_weeks, "weight": round(d.weight.kg, 1)}
    others = ctx.record.orders[1:]
    if others and d.mg_per_kg_per_4_weeks <= d.high:  # too high alone stays too high
        evidence += tuple(o.ref for o in others)
        return finding(
            Status.INSUFFICIENT,
            say("dose.several-orders", count=len(others) + 1, **fields),
            (say("dose.missing-several-orders"),),
        )
    if d.status is Status.MET:
        return finding(Status.MET, say("dose.met", **fields))
    side = "high" if d.mg_per_kg_per_4_weeks > d.high else "low"
    return finding(Status.NOT_MET, say(f"dose.not-met-{side}", **fields))


RULES: dict[str, Callable[[Context], Finding]] = {
    "diagnosis": diagnosis,
    "age": age,
    "baseline-igg": baseline_igg,
    "secondary-causes-excluded": secondary_causes,
    "infection-history": infection_history,
    "vaccine-response": vaccine_response,
    "clinical-response": clinical_response,
    "trough-monitoring": trough_monitoring,
    "dose": dose,
}


def outcome_of(findings: Iterable[Finding]) -> Outcome:
    """Contract outcome rule over the required criteria (home-infusion follows, not leads)."""
    statuses = [f.status for f in findings if f.id != "home-infusion"]
    if Status.NOT_MET in statuses:
        return Outcome.DOES_NOT_MEET
    if Status.INSUFFICIENT in statuses:
        return Outcome.INSUFFICIENT
    return Outcome.MEETS


def home_infusion(ctx: Context, outcome: Outcome) -> Finding:
    status = {Outcome.MEETS: Status.MET, Outcome.DOES_NOT_MEET: Status.NOT_MET}.get(
        outcome, Status.INSUFFICIENT
    )
    order = ctx.record.orders[0].ref if ctx.record.orders else None
    return Finding(
        "home-infusion", status, ctx.say(f"home-infusion.{status.value}"), (order,) if order else ()
    )
