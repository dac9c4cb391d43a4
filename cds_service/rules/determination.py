"""One evaluation: facts -> timeline -> criteria -> the contract's determination object.

Nothing here does I/O: the protocol layer gathers the record, this module decides, and the cards
module only renders what was decided.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from cds_service.domain import (
    ConditionFact,
    DataIssue,
    DraftOrder,
    Finding,
    Measurement,
    Outcome,
    Record,
    Status,
)
from cds_service.knowledge import Knowledge
from cds_service.rules import dosing, report_facts, timeline
from cds_service.rules import registry as criteria
from cds_service.rules.context import dated_measurements
from cds_service.wording import Wording


@dataclass(frozen=True)
class SafetyItem:
    group: str  # renal | cbc | liver
    latest: Measurement | None


@dataclass(frozen=True)
class Safety:
    """Advisory: labs the IGIV boxed warning asks for before infusion, and risk factors."""

    lookback_months: int
    items: tuple[SafetyItem, ...]
    risks: tuple[ConditionFact, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(i.group for i in self.items if i.latest is None)


@dataclass(frozen=True)
class Determination:
    policy: str
    outcome: Outcome
    order: DraftOrder
    findings: tuple[Finding, ...]
    dose: dosing.DoseCheck
    timeline: timeline.Timeline
    safety: Safety
    issues: tuple[DataIssue, ...]
    unavailable: dict[str, str]
    evaluated_on: dt.date
    # what the reviewer's report draws and the contract does not hold (report_facts module)
    report_facts: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def request_type(self) -> str:
        return "continuation" if self.timeline.on_therapy else "initial"

    @property
    def open_items(self) -> list[str]:
        """Every missing-documentation item of the criteria not met, once, in criterion order."""
        return list(
            dict.fromkeys(
                m
                for f in self.findings
                if f.status in (Status.INSUFFICIENT, Status.NOT_MET)
                for m in f.missing
            )
        )

    def finding(self, cid: str) -> Finding:
        return next(f for f in self.findings if f.id == cid)

    def to_contract(self) -> dict[str, Any]:
        """The machine-readable object of shared/contract/determination.md."""
        start = self.timeline.therapy_start
        contract: dict[str, Any] = {
            "policy": self.policy,
            "outcome": str(self.outcome),
            "requestType": self.request_type,
            # a partial start ('2025-03') documents no day: the contract's date is unknown
            "therapyStart": start.date.isoformat() if start and start.end is None else None,
            "criteria": [
                {
                    "id": f.id,
                    "status": f.status.value,
                    "reason": f.reason,
                    "evidence": list(dict.fromkeys(f.evidence)),
                    "missing": list(f.missing),
                }
                for f in self.findings
            ],
            "dose": {
                "gramsPerDose": self.dose.grams_per_dose,
                "intervalDays": (
                    round(self.order.interval_days, 2)
                    if self.order.interval_days is not None
                    else None
                ),
                "weightKg": round(self.dose.weight.kg, 2) if self.dose.weight else None,
                "mgPerKgPer4Weeks": self.dose.mg_per_kg_per_4_weeks,
                "status": self.dose.status.value,
            },
            "labs": [
                {
                    "reference": p.result.ref,
                    "date": p.result.when.instant.isoformat()
                    if p.result.when and p.result.when.instant
                    else (str(p.result.when) if p.result.when else "unknown"),
                    "valueMgDl": p.result.value_mg_dl,
                    "phase": p.phase.value,
                }
                for p in self.timeline.labs
            ],
        }
        if self.unavailable:
            # inputs that could not be read (prefetch absent and fhirServer failed): the criteria
            # they feed are never met on their account; required ones end in 412 instead
            contract["unavailable"] = dict(sorted(self.unavailable.items()))
        return contract


def _safety(record: Record, kn: Knowledge) -> Safety:
    spec = kn.policy.safety
    months = spec.lookback_months
    since = criteria.months_before(record.today, months)
    items = []
    for group, sets in spec.labs:
        latest: Measurement | None = None
        for vid in sets:
            m = criteria.latest_measurement(record, kn.vs(vid), since)
            if m is not None and (
                latest is None or (m.when and latest.when and m.when.date > latest.when.date)
            ):
                latest = m
        items.append(SafetyItem(group, latest))
    risk_sets = [kn.vs(v) for v in spec.risk_valuesets]
    risks = tuple(
        c
        for c in record.conditions
        if c.active and any(vs.any_match(c.codings) for vs in risk_sets)
    )
    return Safety(months, tuple(items), risks)


def evaluate(record: Record, kn: Knowledge, say: Wording) -> Determination | None:
    """The determination for the record's first IG draft order, or None when there is none."""
    if not record.orders:
        return None
    order = record.orders[0]
    tl = timeline.build(record.exposures, record.igg)
    # only dated body weights can be the dose's weight: the record's index hands over just those
    weights = dated_measurements(record, kn.vs("body-weight"))
    dose = dosing.check(order, weights, kn, record.today)
    mgkg = dose.mg_per_kg_per_4_weeks
    if len(record.orders) > 1 and mgkg is not None and mgkg <= dose.high:
        # further IG orders signed with it add IG the first order's mg/kg does not count
        # (criteria.dose words it); a first order already above the range stays not-met
        dose = dataclasses.replace(dose, status=Status.INSUFFICIENT)
    ctx = criteria.Context(record, tl, kn, say, dose)
    findings = [
        criteria.RULES[cid](ctx) for cid in criteria.CRITERIA_ORDER if cid != "home-infusion"
    ]
    outcome = criteria.outcome_of(findings)
    findings.append(criteria.home_infusion(ctx, outcome))
    return Determination(
        kn.policy_id,
        outcome,
        order,
        tuple(findings),
        dose,
        tl,
        _safety(record, kn),
        tuple(record.issues),
        dict(record.unavailable),
        record.today,
        report_facts.collect(ctx),
    )
