"""The IgG timeline: when IG therapy began and which results are pre-treatment (baseline).

Implements the contract's timeline rule (shared/contract/determination.md): the draft order is not
exposure; a result before the first dated dose is baseline, after it on-treatment; when therapy is
documented as under way without a start date, results before the earliest dated evidence of therapy
are `unknown`, never baseline, because a trough drawn on treatment cannot prove the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.domain import Exposure, IgGResult, Phase, When


@dataclass(frozen=True)
class LabPoint:
    result: IgGResult
    phase: Phase


@dataclass(frozen=True)
class Timeline:
    exposures: tuple[Exposure, ...]
    first_dose: When | None  # earliest dated start among the exposures
    first_dose_ref: str | None
    start_undocumented: tuple[str, ...]  # exposures whose start date is not recorded
    earliest_evidence: When | None  # earliest date on which the record shows therapy under way
    labs: tuple[LabPoint, ...]  # oldest first; undated results last

    @property
    def on_therapy(self) -> bool:
        return bool(self.exposures)

    @property
    def therapy_start(self) -> When | None:
        """The contract's therapyStart: only when no exposure leaves the start in doubt."""
        return None if self.start_undocumented else self.first_dose

    @property
    def reference_point(self) -> When | None:
        """The date that splits 'before treatment' from 'on treatment' for counting purposes."""
        return self.therapy_start or self.earliest_evidence


def _before(a: When, b: When) -> bool | None:
    """a strictly before b; None when they share a day and the times can't tell."""
    if a.date != b.date:
        return a.date < b.date
    if a.instant is not None and b.instant is not None and a.instant != b.instant:
        return a.instant < b.instant
    return None


def phase_of(
    when: When | None,
    first_dose: When | None,
    undated: bool,
    earliest_evidence: When | None,
    any_exposure: bool,
) -> Phase:
    """Phase of one result (see module docstring)."""
    if when is None:
        return Phase.UNKNOWN
    if not any_exposure:
        return Phase.BASELINE
    if undated:
        if earliest_evidence is None:
            return Phase.UNKNOWN
        return Phase.ON_TREATMENT if _before(earliest_evidence, when) else Phase.UNKNOWN
    if first_dose is None:  # cannot happen when every exposure is dated; stay conservative
        return Phase.UNKNOWN
    order = _before(when, first_dose)
    if order is None:
        return Phase.UNKNOWN
    return Phase.BASELINE if order else Phase.ON_TREATMENT


def build(exposures: list[Exposure], igg: list[IgGResult]) -> Timeline:
    dated = sorted(
        (e for e in exposures if e.start is not None),
        key=lambda e: (e.start.date if e.start else None, e.ref),
    )
    first = dated[0] if dated else None
    undated = tuple(sorted(e.ref for e in exposures if e.start is None))
    evidence_dates = [e.start for e in exposures if e.start is not None]
    evidence_dates += [e.asserted for e in exposures if e.asserted is not None]
    earliest = min(evidence_dates, key=lambda w: w.date) if evidence_dates else None
    first_when = first.start if first else None
    labs = sorted(igg, key=lambda r: (r.when is None, r.when.date if r.when else None, r.ref))
    points = tuple(
        LabPoint(r, phase_of(r.when, first_when, bool(undated), earliest, bool(exposures)))
        for r in labs
    )
    return Timeline(
        tuple(exposures), first_when, first.ref if first else None, undated, earliest, points
    )
