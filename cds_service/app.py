"""FastAPI application: CDS Hooks routes and the single error handler.

Evaluation is CPU-bound and record fetching blocks on I/O, so hook calls run on their own thread
pool, at most ``IVIG_CDS_EVAL_THREADS`` at once per process (the rest wait in its queue without
holding a thread). Discovery, health, readiness and
metrics are answered on the event loop or in the shared thread pool, so they never queue behind
evaluations.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_service import __version__, knowledge, metrics, openapi, wording
from cds_service.auth import JwtVerifier
from cds_service.errors import (
    CdsError,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from cds_service.fhir.client import Allowlist, FetchLimits, FhirFetcher
from cds_service.hooks.models import Response as HookResponse
from cds_service.observe import Observe, hook_instance
from cds_service.protocol import parse_feedback
from cds_service.render.cards import CardRenderer
from cds_service.render.orderables import Actions
from cds_service.render.report import ReportRenderer, not_found_page
from cds_service.service import Pipeline, build_pipeline
from cds_service.settings import Settings, get_settings
from cds_service.storage import FeedbackItem, Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


# FHIR issue-type codes (http://hl7.org/fhir/issue-type) for the statuses this service answers
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",  # data the determination needs could not be read
    413: "too-long",
    415: "not-supported",
    500: "exception",
}


def _problem(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    error_id: str | None = None,
) -> JSONResponse:
    """A non-2xx answer: a plain FHIR OperationOutcome (CDS Hooks 3.0 STU suggests one; 2.0
    defines no error body), the message in `diagnostics` and `details.text`. No other members:
    strict FHIR parsers reject an OperationOutcome that carries any."""
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if error_id is not None:
        outcome["id"] = error_id
    outcome["issue"] = [
        {
            "severity": "error",
            "code": ISSUE_CODES.get(status, "processing" if status < 500 else "exception"),
            "details": {"text": message},
            "diagnostics": message,
        }
    ]
    return JSONResponse(status_code=status, headers=headers, content=outcome)


def internal_error(exc: BaseException) -> JSONResponse:
    """500 for an exception nothing else handled: an id to quote, and one log line with that id
    and the exception's type only (its message or traceback may carry patient data or tokens,
    and a RecursionError's traceback is a thousand frames)."""
    error_id = uuid.uuid4().hex
    log.error("internal error %s: %s", error_id, type(exc).__name__)
    return _problem(
        500, f"internal error; quote {error_id} to the service's operators", None, error_id
    )


class CatchAll:
    """ASGI middleware answering `internal_error` for any exception the app let through. (An
    exception handler for `Exception` is not enough: Starlette calls it, then re-raises to the
    server, which logs the whole traceback.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_started)
        except Exception as exc:
            if started:  # too late for another answer: end the connection
                log.error("internal error after the response started: %s", type(exc).__name__)
                return
            await internal_error(exc)(scope, receive, send)


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _json_status(status: int, content: Any) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


EXPIRED_HTML = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Report expired</title>"
    "<h1>This report has expired</h1><p>Its evaluation was older than this service's retention "
    "period and has been deleted, with the feedback on its cards.</p></html>"
)


REPORT_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 once it exceeds `limit` bytes (counted as it arrives, so a
    missing or lying Content-Length does not let a client fill the memory); a body not sent as
    JSON is a 415 (form and text/plain posts need no CORS preflight from a web page)."""
    if not _is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType("Content-Type must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _ContextExecutor(ThreadPoolExecutor):
    """Runs each job in the submitter's context: fetch log lines carry the request id."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class MeteredFetcher(FhirFetcher):
    """The FHIR fetcher with per-key latency and error metrics, its jobs in the request's
    logging context (fhir/client.py stays as is)."""

    executor = _ContextExecutor

    def __call__(self, parsed: Any, specs: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
        values, unreadable = super().__call__(parsed, specs)
        for key in unreadable:
            metrics.FETCH_ERRORS.labels(key).inc()
        return values, unreadable

    def _fetch_key(self, *args: Any, **kw: Any) -> Any:
        spec = args[1] if len(args) > 1 else kw["spec"]
        with metrics.FETCH_LATENCY.labels(spec.key).time():
            return super()._fetch_key(*args, **kw)


def build_fetcher(settings: Settings) -> FhirFetcher:
    """The pooled FHIR client that fills prefetch keys the EHR did not send."""
    return MeteredFetcher(
        Allowlist(settings.fhir_allowlist, loopback=settings.demo),
        FetchLimits(
            budget_s=settings.fetch_budget_s,
            timeout_s=settings.fetch_timeout_s,
            max_pages=settings.fetch_max_pages,
            max_resources=settings.fetch_max_resources,
            page_size=settings.fetch_page_size,
            workers=settings.fetch_workers,
            workers_per_server=settings.fetch_workers_per_server,
            max_url=settings.fetch_max_url,
            max_bytes=settings.fetch_max_bytes,
            request_max_bytes=settings.fetch_request_max_bytes,
        ),
    )


def pipeline_from_settings(settings: Settings) -> Pipeline:
    """Knowledge, wording, templates and actions loaded once (a bad file stops start-up)."""
    kn = knowledge.load(settings.knowledge_dir, settings.policy_file)
    actions = Actions(kn, settings.knowledge_dir, settings.cards_dir)
    return build_pipeline(
        kn,
        wording.load(settings.cards_dir),
        CardRenderer(settings.cards_dir, actions),
        settings.source_label,
        fetcher=build_fetcher(settings),
        actions=actions,
        max_resources=settings.fetch_max_resources,
        max_total_resources=settings.prefetch_max_resources,
    )


# How long a thread may hold the GIL while another waits (CPython's default: 5 ms). The event
# loop needs the GIL a few times per request; behind CPU-bound evaluations each of those waits
# costs up to this long, so discovery and health under load take a few times this, not 5 ms each.
SWITCH_INTERVAL_S = 0.001


def prepare_process() -> None:
    """Process-wide tuning for serving: a short GIL switch interval (see above); and the
    long-lived start-up objects (knowledge, templates, FHIR model classes) moved out of the
    collector's sight, or every full collection re-scans them (a ~40 ms pause at p99)."""
    import gc
    import sys

    from cds_service.render import chart

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    chart.warm()  # the report's chart library, loaded before the first report is opened
    gc.collect()
    gc.freeze()


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` process (uvicorn's factory; settings from the
    environment, checked by the parent before it started the workers)."""
    from cds_service import logs

    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)
    app = create_app(settings)
    prepare_process()
    return app


def create_app(
    settings: Settings | None = None,
    pipeline: Pipeline | None = None,
    storage: Storage | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    if pipeline is None:
        pipeline = pipeline_from_settings(settings)
    pipeline.base_url = settings.base_url
    store = storage or Storage(settings.storage_url, migrate_schema=settings.db_migrate)
    reports = ReportRenderer(settings.cards_dir)
    verifier = (
        JwtVerifier(
            settings.jwt_issuers,
            leeway=settings.jwt_leeway_seconds,
            max_lifetime=settings.jwt_max_lifetime_seconds,
            first_use=store.first_use,  # shared by every replica on this database
        )
        if settings.auth_enabled
        else None
    )
    if verifier is None:
        log.warning("CDS client JWT authentication is OFF (demo mode): do not expose this service")
    base = settings.base_url

    def authenticate(request: Request) -> None:
        """CDS Hooks 2.0: the EHR's JWT, aud = the URL called (feedback: also its service)."""
        if verifier is None:
            return
        path = request.url.path.rstrip("/")
        audience = [base + path]
        if path.endswith("/feedback"):
            audience.append(base + path.removesuffix("/feedback"))
        verifier.verify(request.headers.get("authorization"), audience)

    # no thread hop per call when there is nothing to verify (demo)
    authenticated = [Depends(authenticate)] if verifier is not None else []

    stop = threading.Event()

    def purge_now() -> None:
        try:
            purged = store.purge(settings.retention_days or 0)
            if purged:
                log.info("retention: purged %d evaluations", purged)
        except Exception as exc:  # the next round retries; the service goes on answering
            log.error("retention purge failed: %s", type(exc).__name__)

    def purging() -> None:
        while not stop.is_set():
            purge_now()
            stop.wait(settings.purge_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        purger = None
        if settings.retention_days:
            purger = threading.Thread(target=purging, name="retention-purge", daemon=True)
            purger.start()
        yield
        stop.set()
        if purger is not None:
            purger.join(timeout=10)
        while pools:
            pools.pop().shutdown(wait=False, cancel_futures=True)
        if storage is None:
            store.close()

    app = FastAPIOffline(
        title="ivig-cds",
        version=__version__,
        description="CDS Hooks 2.0 service for immune globulin orders",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.state.storage = store
    app.add_middleware(CatchAll)  # added first: inside CORS, so a 500 keeps its CORS headers
    # at most eval_threads evaluations at once; the others wait in the pool's queue, holding no
    # thread, so the shared thread pool and the event loop stay free for everything else. Made
    # on first use and shut down with the app (a lifespan may run more than once in tests).
    pools: list[ThreadPoolExecutor] = []

    def evaluation_pool() -> ThreadPoolExecutor:
        if not pools:
            pools.append(
                ThreadPoolExecutor(max_workers=settings.eval_threads, thread_name_prefix="evaluate")
            )
        return pools[0]

    async def evaluation_thread(fn: Callable[..., T], *args: Any) -> T:
        """Run an evaluation on the evaluation pool, in this request's logging context."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            evaluation_pool(), contextvars.copy_context().run, fn, *args
        )

    services = [s["id"] for s in pipeline.discovery()["services"]]
    if settings.cors_origins:  # CDS Hooks 2.0: browser-based clients need CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(CdsError)
    def _cds_error(_: Request, exc: CdsError) -> JSONResponse:
        if exc.status_code >= 500:
            error_id = uuid.uuid4().hex
            log.error("internal error %s: %s", error_id, exc.message)
            return _problem(exc.status_code, exc.message, None, error_id)
        if isinstance(exc, Unauthorized):
            return _problem(401, exc.message, {"WWW-Authenticate": 'Bearer realm="cds-services"'})
        return _problem(exc.status_code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # routing errors (no such path, method not allowed) in the same shape as every other
        return _problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return _problem(400, f"{loc or '(body)'}: {err.get('msg')}")

    discovery_body = orjson.dumps(pipeline.discovery())

    @app.get(
        "/cds-services",
        dependencies=authenticated,
        summary="CDS Hooks discovery",
        responses=openapi.responses(200, 401, discovery=True),
    )
    async def discovery() -> Response:
        return Response(discovery_body, media_type="application/json")

    def evaluate_and_record(service_id: str, body: bytes, state: Any) -> HookResponse:
        state.hook_instance = hook_instance(body)  # for the access line
        answer = pipeline.answer(service_id, body, reports=True)
        if answer.evaluation is not None:
            store.record(answer.evaluation)  # before the response: feedback can find its cards
            metrics.DETERMINATIONS.labels(service_id, answer.evaluation.outcome).inc()
        return answer.response

    @app.post(
        "/cds-services/{service_id}",
        dependencies=authenticated,
        summary="Call a CDS service (order-sign, order-select)",
        openapi_extra=openapi.request_body("HookRequest"),
        responses=openapi.responses(200, 400, 401, 404, 412, 413, 415),
    )
    async def call_service(service_id: str, request: Request) -> Response:
        pipeline.service(service_id)  # 404 before reading the body
        body = await read_body(request, settings.max_body_bytes)
        return _json(await evaluation_thread(evaluate_and_record, service_id, body, request.state))

    def store_feedback(service_id: str, body: bytes) -> int:
        parsed = parse_feedback(body)
        items = [
            FeedbackItem(
                card=f.card,
                outcome=f.outcome,
                accepted_suggestions=tuple(s.id for s in f.acceptedSuggestions or []),
                outcome_timestamp=f.outcomeTimestamp,
                override_system=f.overrideReason.reason.system
                if f.overrideReason and f.overrideReason.reason
                else None,
                override_code=f.overrideReason.reason.code
                if f.overrideReason and f.overrideReason.reason
                else None,
                override_display=f.overrideReason.reason.display
                if f.overrideReason and f.overrideReason.reason
                else None,
                user_comment=f.overrideReason.userComment if f.overrideReason else None,
            )
            for f in parsed.feedback
        ]
        stored = store.add_feedback(service_id, items)
        for item in items:
            metrics.FEEDBACK.labels(service_id, item.outcome).inc()
        return stored

    @app.post(
        "/cds-services/{service_id}/feedback",
        dependencies=authenticated,
        summary="Feedback on the cards a service returned",
        openapi_extra=openapi.request_body("FeedbackRequest"),
        responses=openapi.responses(200, 400, 401, 404, 413, 415, feedback=True),
    )
    async def feedback(service_id: str, request: Request) -> Response:
        pipeline.service(service_id)
        body = await read_body(request, settings.max_body_bytes)
        stored = await run_in_threadpool(store_feedback, service_id, body)
        return _json({"stored": stored})

    def report_html(report_id: str) -> tuple[int, str | None]:
        ev = store.evaluation(report_id)
        if ev is None:
            return (410, EXPIRED_HTML) if store.expired(report_id) else (404, None)
        return 200, reports.render(ev, store.feedback_for(c.uuid for c in ev.cards))

    missing_report = not_found_page(settings.cards_dir)

    @app.get(
        "/reports/{report_id}",
        response_class=HTMLResponse,
        summary="The HTML report of one evaluation (linked from its cards)",
        responses=openapi.responses(200, 404, 410, html=True),
    )
    async def report(report_id: str, request: Request) -> Response:
        # No JWT: clinicians open it from the card link in a browser. The id is an unguessable
        # 144-bit capability (secrets.token_urlsafe), never listed; see README "Conformance".
        status, html = await run_in_threadpool(report_html, report_id)
        if html is None:
            accept = request.headers.get("accept", "")
            if "json" in accept and "text/html" not in accept:  # a program asked: FHIR's answer
                return _problem(404, "no report with this id")
            # a person follows this link: a page, not the API's JSON problem
            return HTMLResponse(missing_report, status_code=404, headers=REPORT_HEADERS)
        return HTMLResponse(html, status_code=status, headers=REPORT_HEADERS)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "policy": pipeline.kn.policy_id}

    @app.get(
        "/readyz",
        summary="Readiness: knowledge loaded and the database reachable",
        responses={503: {"description": "not ready (the database cannot be reached)"}},
    )
    async def readyz() -> Response:
        try:
            await run_in_threadpool(store.ping)
        except Exception as exc:
            log.warning("not ready: database unreachable (%s)", type(exc).__name__)
            return _json_status(503, {"status": "unavailable", "database": "unreachable"})
        return _json({"status": "ready", "policy": pipeline.kn.policy_id, "database": "ok"})

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.openapi = openapi.customise(app)  # type: ignore[method-assign]
    app.add_middleware(Observe, services=services)  # outermost: sees every answer, CORS too
    return app

    return app
