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

from cds_service import crd, engine, record
from cds_service.cards import DETERMINATION_KEY, CardRenderer
from cds_service.errors import BadRequest, CdsError, DataUnavailable, UnknownService
from cds_service.knowledge import Knowledge
from cds_service.orderables import Actions, OrderContext
from cds_service.protocol import ParsedRequest, parse_request
from cds_service.storage import CardRecord, Evaluation
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
ASSERTION_KEY = "ivig-cds.coverage-assertion-id"
REPORT_KEY = "ivig-cds.report"
# Da Vinci CRD 2.2 standard prefetch key for the patient's coverage (CRDServices.json)
COVERAGE_KEY = record.PrefetchKey("coverage", "Coverage", crd.COVERAGE_QUERY, False)


@dataclass
class Answer:
    """A service response and, when it carries cards, what storage keeps of it."""

    response: dict[str, Any]
    evaluation: Evaluation | None = None


@dataclass
class Engine:
    """Everything loaded once at start-up and shared by all requests (read-only)."""

    kn: Knowledge
    say: Wording
    renderer: CardRenderer
    source: dict[str, Any]
    fetcher: Fetcher | None = None
    actions: Actions | None = None
    base_url: str = "http://127.0.0.1:8080"  # public URL of this service, for report links
    today: Callable[[], dt.date] = field(default=lambda: dt.datetime.now(dt.UTC).date())
    # the most resources one prefetch key may hold (the fetch path's per-query cap): more is not
    # read (that key is unreadable), so no request can make the service read without bound
    max_resources: int = 5000

    def __post_init__(self) -> None:
        self.keys = record.prefetch_keys(self.kn)
        if self.actions is None:
            self.actions = Actions(self.kn)

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
        prefetch = parsed.request.prefetch or {}
        values: dict[str, Any] = {}
        absent: list[record.PrefetchKey] = []
        paged: set[str] = set()
        for spec in self.keys:
            if spec.key not in prefetch or record.is_operation_outcome(prefetch[spec.key]):
                absent.append(spec)
                continue
            record.check_prefetch_value(spec, prefetch[spec.key])
            if record.has_next_page(prefetch[spec.key]):
                # CDS Hooks 2.0 lets a client paginate prefetch: only a first page was sent, so
                # the whole search is run against fhirServer (never decide on part of a record)
                paged.add(spec.key)
                absent.append(spec)
                continue
            values[spec.key] = prefetch[spec.key]
        refused: dict[str, str] = {}  # keys not read: too many, or not this patient's
        patient_id, server = parsed.context.patientId, parsed.request.fhirServer
        for key in list(values):
            entries = values[key].get("entry") if isinstance(values[key], dict) else None
            if isinstance(entries, list) and len(entries) > self.max_resources:
                del values[key]
                refused[key] = (
                    f"prefetch holds more than {self.max_resources} resources, too many to read"
                )
                continue
            others = record.foreign_resources(values[key], patient_id, server)
            if others:
                del values[key]
                refused[key] = (
                    f"prefetch holds {len(others)} resource(s) ({', '.join(sorted(set(others)))}) "
                    "of another patient or of no patient"
                )
        unreadable: dict[str, str] = {}
        if absent:
            if self.fetcher is not None and parsed.request.fhirServer:
                fetched, unreadable = self.fetcher(parsed, absent)
                values.update(fetched)
            else:
                unreadable = {
                    spec.key: (
                        "prefetch holds only the first page of results and there is no "
                        "fhirServer to read the rest from"
                        if spec.key in paged
                        else "not in prefetch and no fhirServer to fetch from"
                    )
                    for spec in absent
                }
        unreadable |= refused
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
        # one canonical order, whatever order the EHR's prefetch or its FHIR server (or the
        # split of a long search into several queries) gave: the same record, the same answer
        resources.sort(key=record.canonical_key)
        return resources, unreadable, empty

    def evaluate(self, parsed: ParsedRequest) -> engine.Determination | None:
        drafts = parsed.context.draftOrders
        builder = record.RecordBuilder(
            self.kn, parsed.context.patientId, dt.date.today(), parsed.request.fhirServer
        )
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
            return Answer({"cards": []})
        assert self.actions is not None
        report_id = secrets.token_urlsafe(18)
        assertion_id = str(uuid.uuid4())
        ctx = OrderContext(
            parsed.context.patientId,
            parsed.context.encounterId,
            parsed.context.userId,
            det.order.ref,
        )
        if svc.hook == "order-select":
            cards = self.renderer.render_select(det, self.source)
        else:
            cards = self.renderer.render(det, self.source)
        cards = _configured(cards, config)
        report_url = f"{self.base_url.rstrip('/')}/reports/{report_id}" if reports else None
        self._decorate(cards, det, ctx, svc.hook, report_url)
        cards[0]["extension"][ASSERTION_KEY] = assertion_id
        response: dict[str, Any] = {"cards": cards}
        action = (
            self._coverage_action(parsed, det, assertion_id, svc.hook)
            if config["coverage-info"]
            else None
        )
        if action is not None:
            response["systemActions"] = [action]
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
            determination=cards[0]["extension"][DETERMINATION_KEY],
            response=response,
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
        return Answer(response, evaluation)

    def _decorate(
        self,
        cards: list[dict[str, Any]],
        det: engine.Determination,
        ctx: OrderContext,
        hook: str,
        report_url: str | None,
    ) -> None:
        assert self.actions is not None
        already: set[str] = set()
        for card in cards:
            kind = card["extension"]["ivig-cds.card-type"]
            if hook == "order-select":
                suggestions = self.actions.all_suggestions(det, ctx)
            else:
                suggestions = self.actions.suggestions(kind, det, ctx, already)
            if suggestions:
                card["suggestions"] = suggestions
                card["selectionBehavior"] = "any"
            if card["indicator"] != "info" or suggestions:
                reasons = self.actions.override_reasons(kind)
                if reasons:
                    card["overrideReasons"] = reasons
            links = [
                {"label": f"Policy: {s.label}", "url": s.url, "type": "absolute"}
                for s in self._sources(kind)
            ]
            if report_url is not None:
                links.append(
                    {
                        "label": "Full report of this determination",
                        "url": report_url,
                        "type": "absolute",
                    }
                )
                card["extension"][REPORT_KEY] = report_url
            if links:
                card["links"] = links

    def _sources(self, kind: str) -> list[Any]:
        """Policy sources a card rests on (distinct urls), the policy's first for the summary."""
        try:
            found = self.kn.sources_for(kind)
        except KeyError:
            found = list(self.kn.policy.sources.values())[:1]
        return list({s.url: s for s in found}.values())[:3]

    def _coverage_action(
        self, parsed: ParsedRequest, det: engine.Determination, assertion_id: str, hook: str
    ) -> dict[str, Any] | None:
        order = crd.find_order(parsed.context.draftOrders, det.order.ref)
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
        assert self.actions is not None
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


def _configured(cards: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    """Drop cards of switched-off types (never the summary card), then cap at max-cards."""
    kept = [
        c for i, c in enumerate(cards) if i == 0 or config.get(c["source"]["topic"]["code"], True)
    ]
    return kept[: int(config["max-cards"])]


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


def build_engine(
    kn: Knowledge,
    say: Wording,
    renderer: CardRenderer,
    label: str,
    fetcher: Fetcher | None = None,
    actions: Actions | None = None,
    max_resources: int = 5000,
) -> Engine:
    first = next(iter(kn.policy.sources.values()))
    source = {
        "label": label,
        "url": first.url,
        "policy_title": kn.policy.title,
        "policy_short": kn.policy_id,
    }
    return Engine(kn, say, renderer, source, fetcher, actions, max_resources=max_resources)
