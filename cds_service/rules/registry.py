"""The criteria registry: every contract criterion id, in contract order, and the rule that decides
it.

Each rule lives in its own module (cds_service/rules/criteria/<id>.py, `decide(ctx)`), driven by
its typed parameters (knowledge/policy.py) and worded from cards/reasons.yaml. This module keeps
the order, the outcome rule and the names other modules and tests import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cds_service.domain import Finding, Outcome, Status
from cds_service.rules.context import (
    Context,
    Episode,
    age_years,
    infection_episodes,
    latest_measurement,
    months_before,
    qualitative,
)
from cds_service.rules.criteria import (
    age as _age,
)
from cds_service.rules.criteria import (
    baseline_igg as _baseline_igg,
)
from cds_service.rules.criteria import (
    clinical_response as _clinical_response,
)
from cds_service.rules.criteria import (
    diagnosis as _diagnosis,
)
from cds_service.rules.criteria import (
    dose as _dose,
)
from cds_service.rules.criteria import (
    home_infusion as _home_infusion,
)
from cds_service.rules.criteria import (
    infection_history as _infection_history,
)
from cds_service.rules.criteria import (
    secondary_causes_excluded as _secondary_causes,
)
from cds_service.rules.criteria import (
    trough_monitoring as _trough_monitoring,
)
from cds_service.rules.criteria import (
    vaccine_response as _vaccine_response,
)

__all__ = [
    "CRITERIA_ORDER",
    "RULES",
    "Context",
    "Episode",
    "age",
    "age_years",
    "baseline_igg",
    "clinical_response",
    "diagnosis",
    "dose",
    "home_infusion",
    "infection_episodes",
    "infection_history",
    "latest_measurement",
    "months_before",
    "outcome_of",
    "qualitative",
    "secondary_causes",
    "trough_monitoring",
    "vaccine_response",
]

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

diagnosis = _diagnosis.decide
age = _age.decide
baseline_igg = _baseline_igg.decide
secondary_causes = _secondary_causes.decide
infection_history = _infection_history.decide
vaccine_response = _vaccine_response.decide
clinical_response = _clinical_response.decide
trough_monitoring = _trough_monitoring.decide
dose = _dose.decide
home_infusion = _home_infusion.decide

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
