"""One patient of a Bulk export -> the order-sign determination, through the hook's own code.

The patient's resources are put in an order-sign request exactly as an EHR would send it: the
latest active IG MedicationRequest as the draft order (authored on the as-of date, the date the
pipeline evaluates on) and every prefetch key the service advertises filled as its search would be
answered. `Pipeline.answer` then runs unchanged, so the determination is the hook's, byte for byte.
Shared by the local and the Spark engine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from cds_service.core.errors import CdsError
from cds_service.fhir import unvalidated
from cds_service.knowledge import Knowledge
from cds_service.record import IGNORED_STATUSES, observation_key_codes
from cds_service.render.cards import DETERMINATION_KEY
from cds_service.render.report import ReportRenderer
from cds_service.service import COVERAGE_KEY, Pipeline

SERVICE_ID = "ivig-order-sign"
REVIEW_USER = "Device/ivig-cds-review"
MEDICATION_TYPES = (
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "MedicationDispense",
)
# a signed order a reviewer re-checks; proposals and plans are not orders
NOT_ORDERS = frozenset({"proposal", "plan", "directive", "option"})
# what a patient's line says when there is no determination to give
NO_ACTIVE_ORDER = "no-active-ig-order"
NOT_EVALUATED = "not-evaluated"

MedicationLookup = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class PatientResult:
    """One line of determinations.ndjson (None: the patient has no IG order or therapy)."""

    line: dict[str, Any] | None
    report_html: str | None = None


class Reviewer:
    """Per-process state: the pipeline (loaded once) and how Observations map to prefetch keys."""

    def __init__(self, pipeline: Pipeline, reports: ReportRenderer | None = None) -> None:
        self.pipeline = pipeline
        self.kn: Knowledge = pipeline.kn
        self.reports = reports
        loinc = self.kn.systems["loinc"]
        self.obs_keys = [
            (key, frozenset((loinc, c) for c in codes))
            for key, codes, _ in observation_key_codes(self.kn)
        ]

    # -- IG -----------------------------------------------------------------------------
    def is_ig(self, res: dict[str, Any], medication: MedicationLookup) -> bool:
        """Whether a medication resource names an IG product (its own, contained or
        referenced Medication's code and names), as the record builder identifies it."""
        codings, texts = unvalidated.medication_concepts(res, medication)
        return self.kn.product_index.identify(codings, texts) is not None

    # -- one patient --------------------------------------------------------------------
    def review(
        self,
        patient_id: str,
        resources: Iterable[dict[str, Any]],
        medication: MedicationLookup,
        as_of: dt.date,
    ) -> PatientResult:
        by_type: dict[str, list[dict[str, Any]]] = {}
        for res in resources:
            by_type.setdefault(str(unvalidated.resource_type(res)), []).append(res)
        on_ig = [
            r
            for rtype in MEDICATION_TYPES
            for r in by_type.get(rtype, [])
            if unvalidated.status(r) not in IGNORED_STATUSES and self.is_ig(r, medication)
        ]
        if not on_ig:
            return PatientResult(None)
        orders = [
            r
            for r in on_ig
            if unvalidated.resource_type(r) == "MedicationRequest"
            and unvalidated.status(r) == "active"
            and unvalidated.intent(r) not in NOT_ORDERS
        ]
        if not orders:
            return PatientResult(
                {
                    "patient": patient_id,
                    "order": None,
                    "determination": None,
                    "status": NO_ACTIVE_ORDER,
                }
            )
        order = max(
            orders,
            key=lambda r: (str(unvalidated.authored_on(r) or ""), unvalidated.id_of(r)),
        )
        order_ref = f"MedicationRequest/{unvalidated.id_of(order)}"
        body = orjson.dumps(self.hook_request(patient_id, order, by_type, medication, as_of))
        try:
            answer = self.pipeline.answer(SERVICE_ID, body)
        except CdsError as exc:  # 400/412/413 as order-sign would answer: named, not fatal
            return PatientResult(
                {
                    "patient": patient_id,
                    "order": order_ref,
                    "determination": None,
                    "status": NOT_EVALUATED,
                    "error": {"status": exc.status_code, "message": exc.message},
                }
            )
        cards = answer.response["cards"]
        if not cards:
            return PatientResult(
                {
                    "patient": patient_id,
                    "order": order_ref,
                    "determination": None,
                    "status": NOT_EVALUATED,
                }
            )
        line = {
            "patient": patient_id,
            "order": order_ref,
            "determination": cards[0]["extension"][DETERMINATION_KEY],
        }
        html = None
        if self.reports is not None and answer.evaluation is not None:
            evaluation = dataclasses.replace(answer.evaluation, created_at=as_of.isoformat())
            html = self.reports.render(evaluation, [])
        return PatientResult(line, html)

    def hook_request(
        self,
        patient_id: str,
        order: dict[str, Any],
        by_type: dict[str, list[dict[str, Any]]],
        medication: MedicationLookup,
        as_of: dt.date,
    ) -> dict[str, Any]:
        """The order-sign request an EHR would send for this order with full prefetch."""
        draft = {**order, "authoredOn": as_of.isoformat()}  # signed on the as-of date
        return {
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid4()),
            "context": {
                "userId": REVIEW_USER,
                "patientId": patient_id,
                "draftOrders": bundle([draft, *_referenced([draft], medication)], "collection"),
            },
            "prefetch": self.prefetch(by_type, medication),
        }

    def prefetch(
        self, by_type: dict[str, list[dict[str, Any]]], medication: MedicationLookup
    ) -> dict[str, Any]:
        """Every advertised key, filled as a FHIR server answers its query: Observations by
        code (as `code=` matches any coding of Observation.code), Medications referenced by a
        key's resources included with them (as `_include` would)."""
        out: dict[str, Any] = {}
        observations: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in self.obs_keys}
        for obs in by_type.get("Observation", []):
            codings = set(unvalidated.codings(obs, "code"))
            for key, codes in self.obs_keys:
                if codings & codes:
                    observations[key].append(obs)
        for spec in (*self.pipeline.keys, COVERAGE_KEY):
            if spec.is_read:
                found = by_type.get(spec.resource_type, [])
                out[spec.key] = found[0] if found else None
            elif spec.key in observations:
                out[spec.key] = bundle(observations[spec.key])
            else:
                found = by_type.get(spec.resource_type, [])
                out[spec.key] = bundle([*found, *_referenced(found, medication)])
        return out


def bundle(resources: list[dict[str, Any]], kind: str = "searchset") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": r} for r in resources],
    }


def _referenced(
    resources: Iterable[dict[str, Any]], medication: MedicationLookup
) -> list[dict[str, Any]]:
    """Medication resources the given resources reference (each once)."""
    seen: dict[str, dict[str, Any]] = {}
    for res in resources:
        target = unvalidated.reference_target(res, "medicationReference")
        if target.startswith("Medication/"):
            rid = target.split("/", 1)[1]
            med = medication(rid)
            if med is not None and rid not in seen:
                seen[rid] = med
    return list(seen.values())
