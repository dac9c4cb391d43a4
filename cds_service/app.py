"""The application's wiring: one pipeline (knowledge, wording, templates, the FHIR fetcher), one
store, the routers of cds_service.api, middleware and the lifespan (retention purge, evaluation
pool). No route lives here.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from cds_service import __version__, knowledge, wording
from cds_service.api import errors, health, hooks, openapi, reports
from cds_service.api.observe import Observe
from cds_service.core import metrics
from cds_service.core.auth import JwtVerifier
from cds_service.core.settings import Settings, get_settings
from cds_service.fhir.client import Allowlist, FetchLimits, FhirFetcher
from cds_service.render.cards import CardRenderer
from cds_service.render.orderables import Actions
from cds_service.render.report import ReportRenderer
from cds_service.service import Pipeline, build_pipeline
from cds_service.storage import Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        max_resources=settings.fetch_max_resources,
        max_total_resources=settings.prefetch_max_resources,
    )


# How long a thread may hold the GIL while another waits (CPython's default: 5 ms). The event
# loop needs the GIL a few times per request; behind CPU-bound evaluations each of those waits
# costs up to this long, so discovery and health under load take a few times this, not 5 ms each.
SWITCH_INTERVAL_S = 0.001

# Net new container objects between two young collections (CPython's default: 700). A request's
# decoded JSON and facts are tens of thousands of acyclic containers that live exactly as long
# as the request and are freed by reference counting; at 700 the collector scanned and promoted
# them hundreds of times per request, about once a full collection (11-14 ms of a 5 000-resource
# evaluation, ~7 %). At this threshold a request rarely triggers one while it runs, and the few
# reference cycles (exception tracebacks) wait a little longer.
YOUNG_COLLECTION_THRESHOLD = 100_000


def prepare_process() -> None:
    """Process-wide tuning for serving: a short GIL switch interval and a larger young
    generation (see above); and the long-lived start-up objects (knowledge, templates, FHIR model
    classes) moved out of the collector's sight, or every full collection re-scans them (a
    ~40 ms pause at p99)."""
    import gc
    import sys

    from cds_service.render import chart

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    chart.warm()  # the report's chart library, loaded before the first report is opened
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` process (uvicorn's factory; settings from the
    environment, checked by the parent before it started the workers)."""
    from cds_service.core import logs

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
    pool = hooks.EvaluationPool(settings.eval_threads)
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
        pool.shutdown()
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
    app.add_middleware(errors.CatchAll)  # added first: inside CORS, so a 500 keeps its CORS headers
    services = [s["id"] for s in pipeline.discovery()["services"]]
    if settings.cors_origins:  # CDS Hooks 2.0: browser-based clients need CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    errors.install(app)
    app.include_router(hooks.router(pipeline, store, pool, settings.max_body_bytes, authenticated))
    app.include_router(
        reports.router(store, ReportRenderer(settings.cards_dir), settings.cards_dir)
    )
    app.include_router(health.router(pipeline.kn.policy_id, store))
    app.openapi = openapi.customise(app)  # type: ignore[method-assign]
    app.add_middleware(Observe, services=services)  # outermost: sees every answer, CORS too
    return app
