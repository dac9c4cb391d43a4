"""The CDS services: discovery entries and the evaluate-and-render pipeline behind each.

Used by the HTTP routes and by `ivig-cds evaluate`, so both give the same answer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cds_service import engine, record
from cds_service.cards import CardRenderer
from cds_service.errors import DataUnavailable, UnknownService
from cds_service.knowledge import Knowledge
from cds_service.protocol import ParsedRequest, parse_request
from cds_service.wording import Wording

log = logging.getLogger(__name__)

# Fills prefetch keys the EHR did not send: (request, missing specs) -> (values, unreadable)
Fetcher = Callable[[ParsedRequest, list[record.PrefetchKey]], tuple[dict[str, Any], dict[str, str]]]


@dataclass(frozen=True)
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str


USAGE = (
    "Reads the patient's FHIR record via prefetch or fhirServer with fhirAuthorization; "
    "answers 412 when neither is usable."
)

SERVICES = (
    ServiceDef(
        "ivig-order-sign",
        "order-sign",
        "Immune globulin medical necessity",
        "Checks an immune globulin (IVIG/SCIG) home-infusion order against the "
        "medical-necessity criteria for primary immunodeficiency before it is signed: "
        "what is met, what documentation is missing, the dose in mg/kg, and whether "
        "home-infusion services (S9338, 99601/99602) follow.",
    ),
)


@dataclass
class Engine:
    """Everything loaded once at start-up and shared by all requests (read-only)."""

    kn: Knowledge
    say: Wording
    renderer: CardRenderer
    source: dict[str, Any]
    fetcher: Fetcher | None = None

    def __post_init__(self) -> None:
        self.keys = record.prefetch_keys(self.kn)

    def service(self, service_id: str) -> ServiceDef:
        for svc in SERVICES:
            if svc.id == service_id:
                return svc
        raise UnknownService(f"no CDS service with id {service_id!r}")

    def discovery(self) -> dict[str, Any]:
        return {
            "services": [
                {
                    "hook": s.hook,
                    "id": s.id,
                    "title": s.title,
                    "description": s.description,
                    "prefetch": {k.key: k.query for k in self.keys},
                    "usageRequirements": USAGE,
                }
                for s in SERVICES
            ]
        }

    # -- pipeline ------------------------------------------------------------------------
    def gather(
        self, parsed: ParsedRequest
    ) -> tuple[list[dict[str, Any]], dict[str, str], set[str]]:
        """Resources from prefetch (+ fetcher for absent keys); unreadable and empty keys."""
        prefetch = parsed.request.prefetch or {}
        values: dict[str, Any] = {}
        absent: list[record.PrefetchKey] = []
        for spec in self.keys:
            if spec.key not in prefetch or record.is_operation_outcome(prefetch[spec.key]):
                absent.append(spec)
                continue
            record.check_prefetch_value(spec, prefetch[spec.key])
            values[spec.key] = prefetch[spec.key]
        unreadable: dict[str, str] = {}
        if absent:
            if self.fetcher is not None and parsed.request.fhirServer:
                fetched, unreadable = self.fetcher(parsed, absent)
                values.update(fetched)
            else:
                why = "not in prefetch and no fhirServer to fetch from"
                unreadable = {spec.key: why for spec in absent}
        required = {s.key for s in self.keys if s.required}
        fatal = {k: v for k, v in unreadable.items() if k in required}
        if fatal:
            raise DataUnavailable(fatal)
        resources: list[dict[str, Any]] = []
        empty: set[str] = set()
        for key, value in values.items():
            found = list(record.resources_of(value))
            if not found:
                empty.add(key)
            resources.extend(found)
        return resources, unreadable, empty

    def evaluate(self, parsed: ParsedRequest) -> engine.Determination | None:
        drafts = parsed.context.draftOrders
        builder = record.RecordBuilder(self.kn, parsed.context.patientId, dt.date.today())
        if not builder.ig_draft_orders(drafts):
            return None  # no immune globulin in the draft orders: no guidance, no data reads
        resources, unreadable, empty = self.gather(parsed)
        rec = builder.build(resources, drafts)
        authored = rec.orders[0].authored if rec.orders else None
        if authored is not None:
            rec.today = authored.date  # evaluate as of the order's date (reproducible)
        rec.unavailable = unreadable
        rec.empty = empty
        return engine.evaluate(rec, self.kn, self.say)

    def respond(self, service_id: str, body: bytes) -> dict[str, Any]:
        svc = self.service(service_id)
        parsed = parse_request(body, svc.hook)
        det = self.evaluate(parsed)
        if det is None:
            return {"cards": []}
        return {"cards": self.renderer.render(det, self.source)}


def build_engine(
    kn: Knowledge, say: Wording, renderer: CardRenderer, label: str, fetcher: Fetcher | None = None
) -> Engine:
    first = next(iter(kn.policy.sources.values()))
    source = {
        "label": label,
        "url": first.url,
        "policy_title": kn.policy.title,
        "policy_short": kn.policy_id,
    }
    return Engine(kn, say, renderer, source, fetcher)
