"""Liveness, readiness and Prometheus metrics: answered on the event loop or the shared thread
pool, never behind evaluations."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cds_service.api.wire import json_response
from cds_service.core import metrics
from cds_service.storage import Storage

log = logging.getLogger(__name__)


def router(policy_id: str, store: Storage) -> APIRouter:
    api = APIRouter()

    @api.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "policy": policy_id}

    @api.get(
        "/readyz",
        summary="Readiness: knowledge loaded and the database reachable",
        responses={503: {"description": "not ready (the database cannot be reached)"}},
    )
    async def readyz() -> Response:
        try:
            await run_in_threadpool(store.ping)
        except Exception as exc:
            log.warning("not ready: database unreachable (%s)", type(exc).__name__)
            return json_response({"status": "unavailable", "database": "unreachable"}, 503)
        return json_response({"status": "ready", "policy": policy_id, "database": "ok"})

    @api.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return api
