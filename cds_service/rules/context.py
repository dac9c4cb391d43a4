"""What every criterion reads: the record, the timeline, the knowledge, the wording and the dose
check, plus the small helpers they share (dates, look-ups, how client codes are shown).

Each criterion module in rules/criteria/ reads typed facts through this Context and returns a
Finding (met / not-met / insufficient / not-applicable) with the FHIR references it rests on and
what documentation is missing. Absent data is `insufficient`, never `met`; `not-met` needs
documented evidence.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from cds_service.domain import (
    Coding,
    ConditionFact,
    IgGResult,
    Measurement,
    Phase,
    Record,
    When,
)
from cds_service.knowledge import Knowledge, ValueSet
from cds_service.knowledge.policy import Criteria
from cds_service.rules.dosing import DoseCheck
from cds_service.rules.timeline import Timeline
from cds_service.wording import Wording


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

    @cached_property
    def episodes(self) -> tuple[Episode, ...]:
        """`infection_episodes`, worked out once per evaluation (two criteria read them)."""
        return tuple(_infection_episodes(self))

    @cached_property
    def iv_infusions(self) -> tuple[tuple[str, When], ...]:
        """(reference, start) of each IG administration a result can be the peak of, in timeline
        order: fully dated, and not of a conventional SCIG product (weekly or more often, it keeps
        a near-steady level). Read once per evaluation, not once per IgG result."""
        steady = {
            p.name
            for p in self.kn.products.products
            if p.route == "SC" and p.scig_ivig_conversion_factor != 1.0
        }
        return tuple(
            (e.ref, e.start)
            for e in self.timeline.exposures
            if e.kind == "MedicationAdministration"
            and e.start is not None
            and e.start.end is None
            and e.product not in steady
        )

    @cached_property
    def on_treatment_levels(self) -> tuple[IgGResult, ...]:
        """On-treatment IgG results with a value, in timeline order: what the trough rule and
        the report sort into troughs and peaks."""
        return tuple(
            p.result
            for p in self.timeline.labs
            if p.phase is Phase.ON_TREATMENT and p.result.value_mg_dl is not None
        )

    @cached_property
    def peaks(self) -> dict[str, tuple[str, When]]:
        """Of `on_treatment_levels`, those drawn within the policy's peak window after an IV
        infusion (by reference: that infusion's reference and start). Worked out once per
        evaluation: the trough rule and the report both ask."""
        hours = self.params.trough_monitoring.peak_window_hours
        return {
            r.ref: hit
            for r in self.on_treatment_levels
            if (hit := after_infusion(self, r.when, hours))
        }


def after_infusion(ctx: Context, when: When | None, hours: float) -> tuple[str, When] | None:
    """The IV IG administration a result was drawn shortly after (a peak, not a pre-infusion
    trough): timed values within `hours` after the infusion; a date-only result on a later day
    within the window. A result on the infusion's own day without times counts as drawn
    before it (a trough is drawn on infusion day, before the infusion)."""
    if when is None or hours <= 0:
        return None
    for ref, start in ctx.iv_infusions:  # not conventional SCIG: no peak to avoid there
        if when.instant is not None and start.instant is not None:
            gap = (when.instant - start.instant).total_seconds() / 3600.0
        else:
            days = (when.date - start.date).days
            if days == 0:
                continue
            gap = days * 24.0
        if 0 < gap <= hours:
            return ref, start
    return None


def months_before(day: dt.date, months: int) -> dt.date:
    return day - dt.timedelta(days=round(months * 30.44))


def age_years(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def fmt(value: float) -> str:
    return f"{value:g}"


# a code from the client's record shown in card text: code-shaped only (a prefix match such as
# J18 also matches "J18<markup>"), else the resource's reference
_CODE_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")


def shown(hit: tuple[str, str] | None, ref: str) -> str:
    return hit[1] if hit and _CODE_SHAPE.match(hit[1]) else ref


def display(kn: Knowledge, vs: ValueSet, c: ConditionFact) -> str:
    return shown(vs.first_match(c.codings), c.ref)


def named(vs: ValueSet, c: ConditionFact) -> str:
    """A condition as clinicians read it: its cited name with the code in brackets."""
    hit = vs.first_match(c.codings)
    code = shown(hit, c.ref)
    name = vs.display_for(*hit) if hit else None
    return f"{_plain(name)} [{code}]" if name else code


_SEMANTIC_TAG = re.compile(r"\s*\((disorder|finding|situation)\)$")


def _plain(name: str) -> str:
    """A cited display without its SNOMED semantic tag: 'Pneumonia (disorder)' -> 'Pneumonia'."""
    return _SEMANTIC_TAG.sub("", name)


def dated_measurements(record: Record, vs: ValueSet) -> tuple[Measurement, ...]:
    """The record's dated measurements coded in `vs`, in record order; indexed once per value
    set and record (the criteria and the safety check ask for the same sets several times)."""
    measurements = record.measurements
    count = len(measurements)
    hit = record.measurement_index.get(vs.id)
    if hit is not None and hit[0] == count:
        return hit[1]
    if record.coding_index[0] != count:
        positions: dict[Coding, list[int]] = {}
        for i, m in enumerate(measurements):
            if m.when is not None:
                for coding in m.codings:
                    where = positions.get(coding)
                    if where is None:
                        positions[coding] = [i]
                    elif where[-1] != i:  # ascending and distinct (a coding repeated in m)
                        where.append(i)
        record.coding_index = (count, positions)
    # a measurement matches when one of its codings does: test each distinct coding once
    positions = record.coding_index[1]
    hits = vs.matching(positions.keys())
    if len(hits) == 1:
        at: list[int] = positions[next(iter(hits))]
    else:
        at = sorted({i for coding in hits for i in positions[coding]})
    found = tuple([measurements[i] for i in at])
    record.measurement_index[vs.id] = (count, found)
    return found


def latest_measurement(
    record: Record, vs: ValueSet, since: dt.date | None = None
) -> Measurement | None:
    """The latest dated measurement in `vs` (on or after `since`); the first of a tie."""
    best: Measurement | None = None
    for m in dated_measurements(record, vs):
        assert m.when is not None
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


def unique_refs(refs: Iterable[str]) -> tuple[str, ...]:
    """References once each, in order (components of one panel share their panel's)."""
    return tuple(dict.fromkeys(refs))


@dataclass(frozen=True)
class Episode:
    ref: str
    label: str
    when: When | None


def infection_episodes(ctx: Context) -> list[Episode]:
    """Bacterial infection episodes from Conditions and Encounters, one per day (RULES.md):
    several Conditions or Encounters documenting the same day are one episode."""
    return list(ctx.episodes)


def _infection_episodes(ctx: Context) -> list[Episode]:
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
            add(c.ref, named(vs, c), c.when)
    for e in ctx.record.encounters:
        if vs.any_match(e.reason_codings):
            hit = vs.first_match(e.reason_codings)
            add(e.ref, shown(hit, e.ref), e.when)
    return episodes
