"""FastAPI application: CDS Hooks routes and the single error handler.

Hook endpoints are plain `def`: evaluation is CPU-bound and record fetching uses blocking I/O, so
FastAPI runs them in its thread pool instead of blocking the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cds_service import __version__, knowledge, wording
from cds_service.cards import CardRenderer
from cds_service.errors import CdsError
from cds_service.service import Engine, build_engine
from cds_service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _problem(status: int, message: str) -> JSONResponse:
    # CDS Hooks 3.0 (STU) suggests an OperationOutcome body on non-2xx; 2.0 clients read 'error'.
    return JSONResponse(
        status_code=status,
        content={
            "error": message,
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "processing" if status >= 412 else "invalid",
                    "diagnostics": message,
                }
            ],
        },
    )


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    if engine is None:
        kn = knowledge.load(settings.knowledge_dir, settings.policy_file)
        engine = build_engine(
            kn,
            wording.load(settings.cards_dir),
            CardRenderer(settings.cards_dir),
            settings.source_label,
        )
    app = FastAPI(
        title="ivig-cds",
        version=__version__,
        description="CDS Hooks 2.0 service for immune globulin orders",
    )
    app.state.engine = engine
    app.state.settings = settings

    @app.exception_handler(CdsError)
    def _cds_error(_: Request, exc: CdsError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("internal error: %s", exc.message)
        return _problem(exc.status_code, exc.message)

    @app.exception_handler(RequestValidationError)
    def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return _problem(400, f"{loc or '(body)'}: {err.get('msg')}")

    @app.get("/cds-services")
    def discovery() -> Response:
        return _json(engine.discovery())

    @app.post("/cds-services/{service_id}")
    async def call_service(service_id: str, request: Request) -> Response:
        engine.service(service_id)  # 404 before reading the body
        body = await request.body()
        return _json(await run_in_threadpool(engine.respond, service_id, body))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "policy": engine.kn.policy_id}

    return app
