"""The IgG timeline: when IG therapy began and which results are pre-treatment (baseline).

Implements the contract's timeline rule (shared/contract/determination.md): the draft order is not
exposure; a result before the first dated dose is baseline, after it on-treatment; when therapy is
documented as under way without a start date, results before the earliest dated evidence of therapy
are `unknown`, never baseline, because a trough drawn on treatment cannot prove the baseline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cds_service.domain import Exposure, IgGResult, Phase, When


@dataclass(frozen=True)
class LabPoint:
    result: IgGResult
    phase: Phase


def _order_key(w: When) -> tuple[dt.date, bool, dt.datetime]:
    """A total order on Whens: by day, then timed before untimed, then time (for determinism)."""
    return (w.date, w.instant is None, w.instant or dt.datetime.min.replace(tzinfo=dt.UTC))


@dataclass(frozen=True)
class Timeline:
    exposures: tuple[Exposure, ...]
    first_dose: When | None  # earliest dated start among the exposures
    first_dose_ref: str | None
    start_undocumented: tuple[str, ...]  # exposures whose start date is not recorded
    earliest_evidence: When | None  # earliest date on which the record shows therapy under way
    labs: tuple[LabPoint, ...]  # oldest first; undated results last
    evidence: tuple[When, ...]  # every dated start or assertion of IG therapy
    # `evidence` reduced to the few earliest values `phase` compares with (criteria ask for the
    # phase of every titer): build() reduces it once, to judge the labs, and keeps it here
    bounds: _Bounds = field(repr=False, compare=False)

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

    def phase(self, when: When | None) -> Phase:
        """Phase of any result dated `when` (IgG, titers) against this therapy record."""
        return self.bounds.phase(when, bool(self.start_undocumented), self.on_therapy)


def _before(a: When, b: When) -> bool | None:
    """a strictly before b; None when they share a day and the times can't tell.

    Two timed values compare as instants: their local calendar dates can differ across zones
    (23:30 at UTC-5 on the 4th is after 02:00 UTC on the 5th)."""
    if a.instant is not None and b.instant is not None:
        return None if a.instant == b.instant else a.instant < b.instant
    if a.last < b.date:
        return True
    if b.last < a.date:
        return False
    return None  # the same day, or partial dates whose ranges overlap


def phase_of(
    when: When | None, evidence: tuple[When, ...], undated: bool, any_exposure: bool
) -> Phase:
    """Baseline only when strictly before every dated sign of IG therapy and none is undated;
    on-treatment when strictly after one of them; otherwise unknown (module docstring). The rule
    as stated; the timeline answers it through `_Bounds`, which the tests hold to this."""
    if when is None:
        return Phase.UNKNOWN
    if not any_exposure:
        return Phase.BASELINE
    if any(_before(e, when) is True for e in evidence):
        return Phase.ON_TREATMENT
    if undated or not evidence:
        return Phase.UNKNOWN
    if all(_before(when, e) is True for e in evidence):
        return Phase.BASELINE
    return Phase.UNKNOWN


@dataclass(frozen=True)
class _Bounds:
    """What `phase_of` needs of the evidence, each a minimum (None when there is nothing to
    take it over). `_before` compares two timed values by instant and otherwise by days, so
    "some sign of therapy before `when`" and "`when` before every sign" each reduce to
    comparisons with the earliest instant, day or last day of the timed, untimed or all values.
    tests/unit/test_timeline.py checks the answers equal `phase_of`'s pairwise ones."""

    any: bool  # there is evidence at all
    timed_instant: dt.datetime | None  # earliest instant of the timed values
    untimed_date: dt.date | None  # earliest first day of the untimed values
    untimed_last: dt.date | None  # earliest last day of the untimed values
    all_date: dt.date | None  # earliest first day of every value
    all_last: dt.date | None  # earliest last day of every value

    @classmethod
    def of(cls, evidence: tuple[When, ...]) -> _Bounds:
        timed = [w.instant for w in evidence if w.instant is not None]
        untimed = [w for w in evidence if w.instant is None]
        return cls(
            bool(evidence),
            min(timed, default=None),
            min((w.date for w in untimed), default=None),
            min((w.last for w in untimed), default=None),
            min((w.date for w in evidence), default=None),
            min((w.last for w in evidence), default=None),
        )

    def phase(self, when: When | None, undated: bool, any_exposure: bool) -> Phase:
        """`phase_of(when, evidence, undated, any_exposure)` for the evidence these came from."""
        if when is None:
            return Phase.UNKNOWN
        if not any_exposure:
            return Phase.BASELINE
        if when.instant is not None:
            after_one = (self.timed_instant is not None and self.timed_instant < when.instant) or (
                self.untimed_last is not None and self.untimed_last < when.date
            )
        else:
            after_one = self.all_last is not None and self.all_last < when.date
        if after_one:
            return Phase.ON_TREATMENT
        if undated or not self.any:
            return Phase.UNKNOWN
        if when.instant is not None:
            before_all = (self.timed_instant is None or when.instant < self.timed_instant) and (
                self.untimed_date is None or when.last < self.untimed_date
            )
        else:
            before_all = self.all_date is not None and when.last < self.all_date
        return Phase.BASELINE if before_all else Phase.UNKNOWN


def build(exposures: list[Exposure], igg: list[IgGResult]) -> Timeline:
    dated = sorted(
        (e for e in exposures if e.start is not None),
        key=lambda e: (*_order_key(e.start), e.ref) if e.start else (),
    )
    first = dated[0] if dated else None
    undated = tuple(sorted(e.ref for e in exposures if e.start is None))
    evidence = tuple(
        sorted(
            {w for e in exposures for w in (e.start, e.asserted) if w is not None},
            key=_order_key,
        )
    )
    earliest = evidence[0] if evidence else None
    first_when = first.start if first else None
    labs = sorted(igg, key=lambda r: (r.when is None, _order_key(r.when) if r.when else (), r.ref))
    bounds = _Bounds.of(evidence)
    points = tuple(LabPoint(r, bounds.phase(r.when, bool(undated), bool(exposures))) for r in labs)
    return Timeline(
        tuple(exposures),
        first_when,
        first.ref if first else None,
        undated,
        earliest,
        points,
        evidence,
        bounds,
    )
