"""A pre-treatment IgG below the threshold or the lower limit for age (the lab's range first)."""

from __future__ import annotations

from cds_service.domain import (
    Finding,
    IgGResult,
    Missing,
    Phase,
    Status,
    When,
)
from cds_service.rules.context import (
    Context,
    fmt,
)
from cds_service.rules.timeline import LabPoint

CID = "baseline-igg"


def decide(ctx: Context) -> Finding:
    tl, say = ctx.timeline, ctx.say
    missing = [say.need("baseline-igg.missing")]
    if tl.start_undocumented:
        missing.append(say.need("baseline-igg.missing-start"))
    usable = [p for p in tl.labs if p.result.value_mg_dl is not None]
    baseline = [p for p in usable if p.phase is Phase.BASELINE]
    if baseline:
        return _judge(ctx, baseline[-1].result)
    if usable:
        return _not_a_baseline(ctx, usable, tuple(missing))
    if tl.labs:
        valued = [p for p in tl.labs if p.result.has_value]
        units = ", ".join(sorted({p.result.unit or "none" for p in valued}))
        return Finding(
            CID,
            Status.INSUFFICIENT,
            say("baseline-igg.unusable", units=units) if valued else say("baseline-igg.no-value"),
            tuple(p.result.ref for p in tl.labs),
            tuple(missing),
        )
    reason = say("baseline-igg.none")
    if ctx.unreadable("observations"):
        reason = say("unreadable", what="Lab results", keys="observations")
    return Finding(CID, Status.INSUFFICIENT, reason, (), tuple(missing))


def _judge(ctx: Context, latest: IgGResult) -> Finding:
    """The latest pre-treatment IgG against the threshold, then against the lower limit (the
    lab's own range or the age table, see `lower_limit`); with neither limit known, the 2 SD
    arm stays open and the age is asked for."""
    say = ctx.say
    threshold = ctx.params.baseline_igg.threshold_mg_dl
    value = latest.value_mg_dl or 0.0
    low, source = lower_limit(ctx, latest)
    if source == "lab":
        low_label: str = say("baseline-igg.low-lab")
    else:
        low_label = say("baseline-igg.low-age-table")
        if not ctx.kn.igg_reference.verified:
            low_label += say("unverified")
    shown = {"value": fmt(value), "date": str(latest.when), "threshold": fmt(threshold)}
    if value < threshold:
        why = say("baseline-igg.below-threshold", threshold=fmt(threshold))
    elif low is not None and value <= low:
        why = say("baseline-igg.below-age", low=fmt(low), low_label=low_label)
    elif low is None:
        return Finding(
            CID,
            Status.INSUFFICIENT,
            say("baseline-igg.age-unknown", **shown),
            (latest.ref,),
            (say.need("age.missing"),),
        )
    else:
        reason = say("baseline-igg.not-met", **shown, low=fmt(low), low_label=low_label)
        return Finding(CID, Status.NOT_MET, reason, (latest.ref,))
    met = say("baseline-igg.met", value=shown["value"], date=shown["date"], why=why)
    return Finding(CID, Status.MET, met, (latest.ref,))


def _not_a_baseline(ctx: Context, usable: list[LabPoint], missing: tuple[Missing, ...]) -> Finding:
    """IgG results on record, none shown to precede IG therapy: why each is not a baseline."""
    tl, say = ctx.timeline, ctx.say
    if tl.start_undocumented:
        why = say("baseline-igg.why-undated")
    elif all(p.phase is Phase.ON_TREATMENT for p in usable):
        why = say("baseline-igg.why-on-treatment", start=str(tl.first_dose))
    elif tl.first_dose is None:  # no IG given: the results simply carry no date
        why = say("baseline-igg.why-no-date")
    else:  # undated, or on the day therapy began: not shown to precede it
        why = say("baseline-igg.why-not-before", start=str(tl.first_dose))
    values = ", ".join(f"{fmt(p.result.value_mg_dl or 0)} mg/dL" for p in usable)
    reason = say("baseline-igg.not-baseline", count=len(usable), values=values, why=why)
    evidence = tuple(p.result.ref for p in usable) + tuple(tl.start_undocumented)
    if tl.first_dose_ref:
        evidence += (tl.first_dose_ref,)
    return Finding(CID, Status.INSUFFICIENT, reason, evidence, missing)


def lower_limit(ctx: Context, result: IgGResult) -> tuple[float | None, str]:
    """The lower limit a result is compared with, and where it comes from: the lab's own
    reference range ("lab") when the policy prefers it or the age is unknown, else the age
    table ("age"). The report's chart draws the same limit the rule used."""
    low = age_lower_limit(ctx, result.when)
    lab = result.reference_low_mg_dl
    if lab is not None and (low is None or ctx.params.baseline_igg.prefer_lab_reference_low):
        return lab, "lab"
    return low, "age"


def age_lower_limit(ctx: Context, when: When | None) -> float | None:
    """The age table's lower limit on a date (completed months of age); None without a birth
    date or a date."""
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
