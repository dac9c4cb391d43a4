"""What the reviewer's report needs beyond the contract object, kept with each evaluation.

The determination (docs/determination.md) is a fixed interface and holds no threshold, no limit
for age, no IG administrations or weights; the IgG chart needs them as they were when the order
was evaluated (the policy or the record may change later). So they are collected here, from the
same Record, timeline and knowledge the criteria read, and stored as a small JSON object next to
the determination (storage column ``report_facts``). Dates are ISO strings; nothing here is PHI
beyond what the stored determination already holds.
"""

from __future__ import annotations

from typing import Any

from cds_service import units
from cds_service.domain import When
from cds_service.rules.context import Context, dated_measurements
from cds_service.rules.criteria import baseline_igg

VERSION = 2  # 2: "lowerLimits" (with their source) replaces "ageLowerLimits"


def _day(when: When | None) -> str | None:
    """The recorded day (a partial date keeps its first day; `partial` says so separately)."""
    return when.date.isoformat() if when is not None else None


def collect(ctx: Context) -> dict[str, Any]:
    """The report facts of one evaluation (see the module docstring), JSON-ready."""
    tl = ctx.timeline
    record = ctx.record
    order = ctx.dose.order
    troughs, peaks = _troughs_and_peaks(ctx)
    limits = _lower_limits(ctx)
    weights = _weights(ctx)
    exposures = _exposures(ctx)
    return {
        "version": VERSION,
        "product": order.product if order else None,
        "orderDate": _day(order.authored) if order else None,
        "evaluatedOn": record.today.isoformat(),
        "thresholdMgDl": ctx.params.baseline_igg.threshold_mg_dl,
        "lowerLimits": limits,
        "therapyStart": _day(tl.therapy_start),
        "firstIgRecord": _day(tl.earliest_evidence),
        "startUndocumented": bool(tl.start_undocumented),
        "troughs": troughs,
        "peaks": peaks,
        "exposures": exposures,
        "weights": weights,
        "doseWeightRef": ctx.dose.weight.ref if ctx.dose.weight else None,
    }


def _troughs_and_peaks(ctx: Context) -> tuple[list[str], list[str]]:
    """On-treatment IgG results (refs) sorted as the trough rule sorts them: drawn within the
    peak window after an infusion (peaks) or not (troughs)."""
    troughs: list[str] = []
    peaks: list[str] = []
    if ctx.timeline.on_therapy:
        for r in ctx.on_treatment_levels:
            (peaks if r.ref in ctx.peaks else troughs).append(r.ref)
    return troughs, peaks


def _lower_limits(ctx: Context) -> list[dict[str, Any]]:
    """The limit each result was (or would be) compared with, by day: the lab's own range where
    the rule uses it, else the age table; the order date carries the age limit forward to the
    order."""
    record = ctx.record
    by_day: dict[str, dict[str, Any]] = {}
    for p in ctx.timeline.labs:
        if p.result.when is None:
            continue
        low, source = baseline_igg.lower_limit(ctx, p.result)
        day = p.result.when.date.isoformat()
        if low is not None:
            by_day[day] = {"date": day, "mgDl": low, "source": source}
    today = baseline_igg.age_lower_limit(ctx, When(record.today))
    if today is not None:
        by_day.setdefault(
            record.today.isoformat(),
            {"date": record.today.isoformat(), "mgDl": today, "source": "age"},
        )
    return [by_day[d] for d in sorted(by_day)]


def _weights(ctx: Context) -> list[dict[str, Any]]:
    """Dated body weights in a convertible unit, in kg, oldest first."""
    weights = []
    for m in dated_measurements(ctx.record, ctx.kn.vs("body-weight")):
        if m.value is None or m.when is None:
            continue
        kg = units.weight_to_kg(m.value, m.unit)
        if kg is not None and kg > 0:
            weights.append({"date": m.when.date.isoformat(), "kg": round(kg, 1), "ref": m.ref})
    weights.sort(key=lambda w: str(w["date"]))
    return weights


def _exposures(ctx: Context) -> list[dict[str, Any]]:
    """IG exposures with a start or an asserted date, oldest first; `dated` says whether the
    start itself is recorded."""
    return sorted(
        (
            {
                "date": _day(e.start or e.asserted),
                "dated": e.start is not None,
                "kind": e.kind,
                "product": e.product,
                "ref": e.ref,
            }
            for e in ctx.timeline.exposures
            if (e.start or e.asserted) is not None
        ),
        key=lambda e: str(e["date"]),
    )
