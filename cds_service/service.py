"""The CDS services: discovery entries and the evaluate-and-render pipeline behind each.

Used by the HTTP routes and by `ivig-cds evaluate`, so both give the same answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cds_service import record
from cds_service.core.errors import (
    BadRequest,
    CdsError,
    DataUnavailable,
    PayloadTooLarge,
    UnknownService,
)
from cds_service.fhir import bundle
from cds_service.fhir.query import PrefetchKey
from cds_service.hooks import crd
from cds_service.hooks.models import Action, Card, Response
from cds_service.knowledge import Knowledge
from cds_service.protocol import ParsedRequest, parse_request
from cds_service.render.cards import DETERMINATION_KEY, CardCall, CardRenderer
from cds_service.render.orderables import OrderContext
from cds_service.rules import determination
from cds_service.storage import CardRecord, Evaluation
from cds_service.wording import Wording

log = logging.getLogger(__name__)

# Fills prefetch keys the EHR did not send: (request, missing specs) -> (values, unreadable)
Fetcher = Callable[[ParsedRequest, list[PrefetchKey]], tuple[dict[str, Any], dict[str, str]]]


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
    ServiceDef(
        "ivig-order-select",
        "order-select",
        "Immune globulin: what signing will need",
        "When an immune globulin (IVIG/SCIG) order is selected, lists what documentation the "
        "medical-necessity criteria will need when it is signed, with orders that document it.",
    ),
)
# Da Vinci CRD configuration options (discovery extension; the EHR picks values per request in
# extension["davinci-crd.configuration"]): one boolean per card type this service returns, plus
# max-cards. The summary card is always returned (it carries the determination contract).
CRD_OPTIONS: tuple[dict[str, Any], ...] = (
    {
        "code": "coverage-info",
        "type": "boolean",
        "name": "Coverage information",
        "description": "Return the Da Vinci CRD coverage-information systemAction on the order "
        "and the cards on each documentation gap.",
        "default": True,
    },
    {
        "code": "guideline",
        "type": "boolean",
        "name": "Dose guidance",
        "description": "Return the dose (mg/kg) card when the dose is outside the range or "
        "cannot be checked.",
        "default": True,
    },
    {
        "code": "clinical-reminder",
        "type": "boolean",
        "name": "Safety monitoring",
        "description": "Return the card on labs the IGIV boxed warning asks for before infusion.",
        "default": True,
    },
    {
        "code": "max-cards",
        "type": "integer",
        "name": "Maximum cards",
        "description": "Return at most this many cards (the summary card is always first).",
        "default": 10,
    },
)
# Da Vinci CRD 2.2 standard prefetch key for the patient's coverage (CRDServices.json)
COVERAGE_KEY = PrefetchKey("coverage", "Coverage", crd.COVERAGE_QUERY, False)


@dataclass
class Answer:
    """A service response and, when it carries cards, what storage keeps of it."""

    response: Response
    evaluation: Evaluation | None = None
    hook_instance: str | None = None  # the request's own, as parsed (for the access line)


@dataclass
class Pipeline:
    """Everything loaded once at start-up and shared by all requests (read-only)."""

    kn: Knowledge
    say: Wording
    renderer: CardRenderer
    source: dict[str, Any]
    fetcher: Fetcher | None = None
    base_url: str = "http://127.0.0.1:8080"  # public URL of this service, for report links
    today: Callable[[], dt.date] = field(default=lambda: dt.datetime.now(dt.UTC).date())
    # the most resources one prefetch key may hold (the fetch path's per-query cap): more is not
    # read (that key is unreadable), so no request can make the service read without bound
    max_resources: int = 5000
    # the most resources all prefetch keys may hold together: more is a 413 naming the largest
    max_total_resources: int = 20_000

    def __post_init__(self) -> None:
        self.keys = record.prefetch_keys(self.kn)
        self.actions = self.renderer.actions  # the same actions the cards offer

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
                    "prefetch": {k.key: k.query for k in (*self.keys, COVERAGE_KEY)},
                    "usageRequirements": USAGE,
                    "extension": {"davinci-crd.configuration-options": list(CRD_OPTIONS)},
                }
                for s in SERVICES
            ]
        }

    # -- pipeline ------------------------------------------------------------------------
    def gather(
        self, parsed: ParsedRequest
    ) -> tuple[list[dict[str, Any]], dict[str, str], set[str]]:
        """Resources from prefetch (+ fetcher for absent keys); unreadable and empty keys."""
        values, absent, paged = self._prefetched(parsed.request.prefetch or {})
        self._check_total(values)
        walked, refused = self._this_patients(
            values, parsed.context.patientId, parsed.request.fhirServer
        )
        unreadable = self._fetch_absent(parsed, absent, paged, values) | refused
        required = {s.key for s in self.keys if s.required}
        fatal = {k: v for k, v in unreadable.items() if k in required}
        if fatal:
            raise DataUnavailable(fatal)
        resources: list[dict[str, Any]] = []
        empty: set[str] = set()
        for key, value in values.items():
            # fetched keys (never prefetch keys: those were absent) are walked here
            found = walked[key] if key in walked else list(bundle.resources_of(value))
            if not found:
                empty.add(key)
            resources.extend(found)
        # one canonical order, whatever order the EHR's prefetch or its FHIR server (or the
        # split of a long search into several queries) gave: the same record, the same answer
        resources.sort(key=bundle.canonical_key)
        return resources, unreadable, empty

    def _prefetched(
        self, prefetch: dict[str, Any]
    ) -> tuple[dict[str, Any], list[PrefetchKey], set[str]]:
        """The prefetch values to read (checked: a malformed one is a 400), the keys to fetch
        instead (absent, an OperationOutcome, or only a first page) and which were paged."""
        values: dict[str, Any] = {}
        absent: list[PrefetchKey] = []
        paged: set[str] = set()
        for spec in self.keys:
            if spec.key not in prefetch or bundle.is_operation_outcome(prefetch[spec.key]):
                absent.append(spec)
                continue
            record.check_prefetch_value(spec, prefetch[spec.key])
            if bundle.has_next_page(prefetch[spec.key]):
                # CDS Hooks 2.0 lets a client paginate prefetch: only a first page was sent, so
                # the whole search is run against fhirServer (never decide on part of a record)
                paged.add(spec.key)
                absent.append(spec)
                continue
            values[spec.key] = prefetch[spec.key]
        return values, absent, paged

    def _this_patients(
        self, values: dict[str, Any], patient_id: str, server: str | None
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        """Each prefetch key's resources when all are this patient's and not too many; the
        others are taken out of `values` and said why (a key is read whole or not at all)."""
        refused: dict[str, str] = {}
        walked: dict[str, list[dict[str, Any]]] = {}
        for key in list(values):
            entries = values[key].get("entry") if isinstance(values[key], dict) else None
            if isinstance(entries, list) and len(entries) > self.max_resources:
                del values[key]
                refused[key] = (
                    f"prefetch holds more than {self.max_resources} resources, too many to read"
                )
                continue
            found, others = bundle.patient_resources(values[key], patient_id, server)
            if others:
                del values[key]
                refused[key] = (
                    f"prefetch holds {len(others)} resource(s) ({', '.join(sorted(set(others)))}) "
                    "of another patient or of no patient"
                )
            else:
                walked[key] = found
        return walked, refused

    def _fetch_absent(
        self,
        parsed: ParsedRequest,
        absent: list[PrefetchKey],
        paged: set[str],
        values: dict[str, Any],
    ) -> dict[str, str]:
        """Fetch the absent keys from fhirServer into `values`; the keys that could not be read,
        and why."""
        if not absent:
            return {}
        if self.fetcher is not None and parsed.request.fhirServer:
            fetched, unreadable = self.fetcher(parsed, absent)
            values.update(fetched)
            return unreadable
        return {
            spec.key: (
                "prefetch holds only the first page of results and there is no "
                "fhirServer to read the rest from"
                if spec.key in paged
                else "not in prefetch and no fhirServer to fetch from"
            )
            for spec in absent
        }

    def _check_total(self, values: dict[str, Any]) -> None:
        """413 when the prefetch keys together hold more than `max_total_resources` (each key
        alone may be under its own cap): the largest keys are named."""
        sizes = {
            key: len(v["entry"]) if isinstance(v, dict) and isinstance(v.get("entry"), list) else 1
            for key, v in values.items()
        }
        total = sum(sizes.values())
        if total > self.max_total_resources:
            largest = sorted(sizes, key=lambda k: -sizes[k])[:3]
            raise PayloadTooLarge(
                f"prefetch: {total} resources in all keys together, more than "
                f"{self.max_total_resources}; largest: "
                + ", ".join(f"prefetch.{k} ({sizes[k]})" for k in largest)
            )

    def evaluate(self, parsed: ParsedRequest) -> determination.Determination | None:
        drafts = parsed.context.draftOrders
        builder = record.RecordBuilder(
            self.kn, parsed.context.patientId, dt.date.today(), parsed.request.fhirServer
        )
        if not builder.ig_draft_orders(drafts):
            return None  # no immune globulin in the draft orders: no guidance, no data reads
        resources, unreadable, empty = self.gather(parsed)
        rec = builder.build(resources, drafts)  # as of the order's date (reproducible)
        rec.unavailable = unreadable
        rec.empty = empty
        return determination.evaluate(rec, self.kn, self.say)

    def respond(self, service_id: str, body: bytes) -> Response:
        return self.answer(service_id, body).response

    def answer(self, service_id: str, body: bytes, *, reports: bool = False) -> Answer:
        """Evaluate one hook call: cards (with suggestions, override reasons, links) and the CRD
        coverage-information systemAction; `reports` links the cards to /reports/{id}."""
        svc = self.service(service_id)
        parsed = parse_request(body, svc.hook)
        if svc.hook == "order-select":
            parsed = _selected_only(parsed)
        config = crd_configuration(parsed)
        det = self.evaluate(parsed)
        if det is None:
            return Answer({"cards": []}, hook_instance=parsed.request.hookInstance)
        report_id = secrets.token_urlsafe(18)
        assertion_id = str(uuid.uuid4())
        call = CardCall(
            hook=svc.hook,
            ctx=OrderContext(
                parsed.context.patientId,
                parsed.context.encounterId,
                parsed.context.userId,
                det.order.ref,
            ),
            assertion_id=assertion_id,
            report_url=f"{self.base_url.rstrip('/')}/reports/{report_id}" if reports else None,
            draft_order=crd.find_order(parsed.context.draftOrders, det.order.ref),
            config=config,
        )
        if svc.hook == "order-select":
            cards = self.renderer.render_select(det, self.source, call)
        else:
            cards = self.renderer.render(det, self.source, call)
        action = (
            self._coverage_action(parsed, det, call.draft_order, assertion_id, svc.hook)
            if config["coverage-info"]
            else None
        )
        # CDS Hooks 2.0.1 "Use of JSON": an OPTIONAL array is omitted when empty (never [])
        response: Response = {"cards": cards}
        if action is not None:
            response["systemActions"] = [action]
        stored = bounded_evidence(cards[0]["extension"][DETERMINATION_KEY])
        evaluation = Evaluation(
            id=report_id,
            service_id=svc.id,
            hook=svc.hook,
            hook_instance=parsed.request.hookInstance,
            patient_id=parsed.context.patientId,
            order_ref=det.order.ref,
            assertion_id=assertion_id,
            policy=det.policy,
            outcome=det.outcome,
            determination=stored,
            response=_with_determination(response, stored),
            report_facts=det.report_facts,
            cards=tuple(
                CardRecord(
                    c["uuid"],
                    c["extension"]["ivig-cds.card-type"],
                    c["summary"],
                    tuple(s["uuid"] for s in c.get("suggestions", [])),
                )
                for c in cards
            ),
        )
        return Answer(response, evaluation, parsed.request.hookInstance)

    def _coverage_action(
        self,
        parsed: ParsedRequest,
        det: determination.Determination,
        order: dict[str, Any] | None,
        assertion_id: str,
        hook: str,
    ) -> Action | None:
        """The CRD coverage-information systemAction on `order` (the draft order being
        evaluated, as the cards found it)."""
        if order is None:
            return None  # CRD found-36: the order must carry an id the update can target
        prefetch = parsed.request.prefetch or {}
        if COVERAGE_KEY.key in prefetch:  # sent (even null): the EHR answered; no query
            coverage = crd.coverage_reference(prefetch[COVERAGE_KEY.key], order)
        else:  # the order's own insurance, else ask fhirServer (one extra query, optional data)
            coverage = crd.coverage_reference(None, order) or crd.coverage_reference(
                self._fetch_coverage(parsed), None
            )
        if coverage is None:
            return None  # no Coverage known: CRD requires one (see crd module docstring)
        ext = crd.coverage_extension(
            det,
            coverage_ref=coverage,
            assertion_id=assertion_id,
            billing=self.actions.billing_codes(det),
            hook=hook,
            today=self.today(),
        )
        return crd.system_action(order, ext)

    def _fetch_coverage(self, parsed: ParsedRequest) -> Any:
        """The CRD `coverage` query against fhirServer, when there is one to ask."""
        if self.fetcher is None or not parsed.request.fhirServer:
            return None
        try:
            fetched, _ = self.fetcher(parsed, [COVERAGE_KEY])
        except CdsError as exc:  # optional data: without it there is no coverage assertion
            log.info("coverage not fetched: %s", exc.message)
            return None
        return fetched.get(COVERAGE_KEY.key)


def crd_configuration(parsed: ParsedRequest) -> dict[str, Any]:
    """CRD options for this call: defaults, overridden by extension["davinci-crd.configuration"]
    (unknown options are ignored, CRD hook-23; a wrong type is a 400 naming it)."""
    config: dict[str, Any] = {o["code"]: o["default"] for o in CRD_OPTIONS}
    given = (parsed.request.extension or {}).get("davinci-crd.configuration")
    if given is None:
        return config
    where = "extension.davinci-crd.configuration"
    if not isinstance(given, dict):
        raise BadRequest(where, "must be an object")
    for option in CRD_OPTIONS:
        code = option["code"]
        if code not in given:
            continue
        value = given[code]
        if option["type"] == "boolean" and not isinstance(value, bool):
            raise BadRequest(f"{where}.{code}", "must be true or false")
        if option["type"] == "integer" and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise BadRequest(f"{where}.{code}", "must be a positive integer")
        config[code] = value
    return config


def _selected_only(parsed: ParsedRequest) -> ParsedRequest:
    """order-select: evaluate only the orders the clinician selected (context.selections)."""
    wanted = set(parsed.context.selections or [])
    drafts = parsed.context.draftOrders
    entries = [
        e
        for e in drafts.get("entry", [])
        if f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}" in wanted
    ]
    if not entries:
        raise BadRequest("context.selections", "names no resource in context.draftOrders")
    context = parsed.context.model_copy(update={"draftOrders": {**drafts, "entry": entries}})
    return ParsedRequest(request=parsed.request, context=context)


# What storage keeps of one determination's evidence lists: the report and an audit need the
# findings, not thousands of results (the response carries every one, as the contract says).
STORED_EVIDENCE_MAX = 200


def bounded_evidence(det: dict[str, Any], limit: int = STORED_EVIDENCE_MAX) -> dict[str, Any]:
    """The determination as stored: the latest `limit` IgG results (`labsOmitted` counts the
    older ones left out) and at most `limit` references per criterion's `evidence`."""
    labs = det.get("labs") or []
    criteria = det.get("criteria") or []
    if len(labs) <= limit and all(len(c.get("evidence") or []) <= limit for c in criteria):
        return det
    out = dict(det)
    if len(labs) > limit:
        out["labs"] = labs[-limit:]  # oldest first: the latest are kept
        out["labsOmitted"] = len(labs) - limit
    out["criteria"] = [
        {**c, "evidence": c["evidence"][:limit], "evidenceOmitted": len(c["evidence"]) - limit}
        if len(c.get("evidence") or []) > limit
        else c
        for c in criteria
    ]
    return out


def _with_determination(response: Response, det: dict[str, Any]) -> Response:
    """The response with the first card's determination replaced (a copy; cards not copied)."""
    first = response["cards"][0]
    card: Card = {**first, "extension": {**first.get("extension", {}), DETERMINATION_KEY: det}}
    out: Response = {"cards": [card, *response["cards"][1:]]}
    if "systemActions" in response:
        out["systemActions"] = response["systemActions"]
    return out


def build_pipeline(
    kn: Knowledge,
    say: Wording,
    renderer: CardRenderer,
    label: str,
    fetcher: Fetcher | None = None,
    max_resources: int = 5000,
    max_total_resources: int = 20_000,
) -> Pipeline:
    first = next(iter(kn.policy.sources.values()))
    source = {
        "label": label,
        "url": first.url,
        "policy_title": kn.policy.title,
        "policy_short": kn.policy_id,
    }
    return Pipeline(
        kn,
        say,
        renderer,
        source,
        fetcher,
        max_resources=max_resources,
        max_total_resources=max_total_resources,
    )
