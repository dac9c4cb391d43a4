"""Da Vinci CRD (STU 2.x) coverage information: a systemAction that updates the draft IG order.

The extension is derived from the determination alone (CRD 2.2.1 ``ext-coverage-information``,
HL7/davinci-crd ``input/fsh/extensions/CoverageInformation.fsh``):

- meets-criteria: covered; reason (text).
- insufficient-documentation: conditional; doc-needed clinical (order-sign only); info-needed OTH;
  reason: what is needed.
- insufficient, and some data could not be read: indeterminate; reason ``technical`` + text.
- does-not-meet-criteria: not-covered; reason: the criteria not met.

Always: ``coverage`` (the Coverage the EHR sent), ``billingCode`` (J-code, S9338, 99601, 99602),
``date``, ``coverage-assertion-id``. No ``pa-needed``: the policy says what documentation is
needed, not how a given payer authorizes, so asserting a PA requirement would be made up.
Invariants crd-ci-q1..q9 hold by construction (q3: info-needed exactly when something is
conditional; q6/q9: a reason whenever info-needed is OTH or covered is indeterminate; q7: every
reason carries text). order-select is a secondary hook: no doc-needed there (CRD ``hook-19``).

Coverage is 1..1 Reference(Coverage): the server must name the patient's coverage, and only the
EHR knows it. It comes from the ``coverage`` prefetch key (CRD's standard
``Coverage?patient={{context.patientId}}&status=active``), else the draft order's ``insurance``.
When neither gives one, no coverage-information is returned (an extension without a Coverage
would not conform); the cards still carry the full determination.
The update changes nothing on the order but its coverage-information extensions (CRD ``resp-37``).
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import orjson

from cds_service.domain import Outcome, Status
from cds_service.fhir import bundle
from cds_service.hooks.models import Action
from cds_service.rules.determination import Determination

Json = dict[str, Any]
EXT_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
REASON_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
COVERAGE_QUERY = "Coverage?patient={{context.patientId}}&status=active"
REASON_LIMIT = 1000


def coverage_reference(prefetch_value: Any, order: Json | None) -> str | None:
    """'Coverage/id' of the patient's (primary) active coverage, or None when not known."""
    found = [r for r in bundle.resources_of(prefetch_value) if r.get("resourceType") == "Coverage"]
    active = [
        c for c in found if isinstance(c.get("id"), str) and c.get("status", "active") == "active"
    ]
    if active:
        # CRD dev-29: one (primary) coverage; lowest Coverage.order first when several are sent
        active.sort(key=lambda c: int(c["order"]) if isinstance(c.get("order"), int) else 1 << 30)
        return f"Coverage/{active[0]['id']}"
    for ins in (order or {}).get("insurance") or []:
        ref = ins.get("reference") if isinstance(ins, dict) else None
        if isinstance(ref, str) and ref.split("/")[-2:-1] == ["Coverage"]:
            return "/".join(ref.split("/")[-2:])
    return None


def _reason(text: str, code: str | None = None) -> Json:
    concept: Json = {"text": text[:REASON_LIMIT]}
    if code is not None:
        concept["coding"] = [{"system": REASON_SYSTEM, "code": code}]
    return {"url": "reason", "valueCodeableConcept": concept}


def coverage_extension(
    det: Determination,
    *,
    coverage_ref: str,
    assertion_id: str,
    billing: list[Json],
    hook: str,
    today: dt.date,
) -> Json:
    needed = list(
        dict.fromkeys(
            m
            for f in det.findings
            if f.status in (Status.INSUFFICIENT, Status.NOT_MET)
            for m in f.missing
        )
    )
    unreadable = sorted(det.unavailable) or sorted({i.ref for i in det.issues})
    subs: list[Json] = [{"url": "coverage", "valueReference": {"reference": coverage_ref}}]
    reasons: list[Json] = []
    if det.outcome == Outcome.MEETS:
        subs.append({"url": "covered", "valueCode": "covered"})
        reasons.append(_reason(f"Meets {det.policy} medical-necessity criteria."))
    elif det.outcome == Outcome.DOES_NOT_MEET:
        subs.append({"url": "covered", "valueCode": "not-covered"})
        failed = [f.reason for f in det.findings if f.status is Status.NOT_MET]
        reasons.append(_reason(f"Does not meet {det.policy}: " + " ".join(failed)))
    elif unreadable:
        subs.append({"url": "covered", "valueCode": "indeterminate"})
        if hook == "order-sign" and needed:
            subs.append({"url": "doc-needed", "valueCode": "clinical"})
        reasons.append(
            _reason(
                "Part of the record could not be read (" + ", ".join(unreadable) + "), so "
                f"{det.policy} criteria cannot be confirmed.",
                "technical",
            )
        )
    else:
        subs.append({"url": "covered", "valueCode": "conditional"})
        if hook == "order-sign":
            subs.append({"url": "doc-needed", "valueCode": "clinical"})
        subs.append({"url": "info-needed", "valueCode": "OTH"})
        lead = "Needed before approval: " if hook == "order-sign" else "Will be needed at signing: "
        reasons.append(_reason(lead + "; ".join(needed) + "."))
    subs.extend({"url": "billingCode", "valueCoding": c} for c in billing)
    subs.extend(reasons)
    subs.append({"url": "date", "valueDate": today.isoformat()})
    subs.append({"url": "coverage-assertion-id", "valueString": assertion_id})
    return {"url": EXT_URL, "extension": subs}


def copy_json(value: Json) -> Json:
    """A deep copy of JSON from the request body (a draft order an action updates): through
    orjson, eight times cheaper than copy.deepcopy and exact for what orjson parsed (no NaN, no
    integer beyond 64 bits); copy.deepcopy for anything orjson cannot write."""
    try:
        copied: Json = orjson.loads(orjson.dumps(value))
    except TypeError:  # orjson.JSONEncodeError
        return copy.deepcopy(value)
    return copied


def system_action(order: Json, extension: Json) -> Action:
    """Update of the draft order: its own content plus this coverage-information extension
    (an earlier repetition for the same coverage is replaced; nothing else changes)."""
    updated = copy_json(order)
    coverage = extension["extension"][0]["valueReference"]["reference"]
    kept = [
        e
        for e in updated.get("extension") or []
        if not (
            isinstance(e, dict)
            and e.get("url") == EXT_URL
            and any(
                s.get("url") == "coverage"
                and (s.get("valueReference") or {}).get("reference") == coverage
                for s in e.get("extension") or []
                if isinstance(s, dict)
            )
        )
    ]
    updated["extension"] = [*kept, extension]
    return {
        "type": "update",
        "description": "Record Da Vinci CRD coverage information on the immune globulin order",
        "resource": updated,
    }


def find_order(draft_orders: Json, ref: str) -> Json | None:
    """The draft order resource `ref` ('MedicationRequest/id') names, if it carries that id."""
    rtype, _, rid = ref.partition("/")
    for res in bundle.resources_of(draft_orders):
        if res.get("resourceType") == rtype and res.get("id") == rid:
            return res
    return None
