"""CDS Hooks routes: discovery, a service call, and feedback on the cards it returned.

Evaluation is CPU-bound and record fetching blocks on I/O, so hook calls run on their own thread
pool, at most ``IVIG_CDS_EVAL_THREADS`` at once per process (the rest wait in its queue without
holding a thread); discovery and feedback never queue behind evaluations.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cds_service.api import openapi
from cds_service.api.observe import hook_instance, loggable
from cds_service.api.wire import json_response, read_body
from cds_service.core import metrics
from cds_service.hooks.models import Response as HookResponse
from cds_service.protocol import parse_feedback
from cds_service.service import Pipeline
from cds_service.storage import FeedbackItem, Storage

T = TypeVar("T")


class EvaluationPool:
    """At most `threads` evaluations at once; the others wait in the pool's queue, holding no
    thread, so the shared thread pool and the event loop stay free for everything else. Made on
    first use and shut down with the app (a lifespan may run more than once in tests)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="evaluate")
        return self._pool

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the pool, in this request's logging context."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor(), contextvars.copy_context().run, fn, *args
        )

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _feedback_items(body: bytes) -> list[FeedbackItem]:
    parsed = parse_feedback(body)
    return [
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


def router(
    pipeline: Pipeline,
    store: Storage,
    pool: EvaluationPool,
    max_body_bytes: int,
    authenticated: Sequence[Depends],
) -> APIRouter:
    """The routes under /cds-services, each behind `authenticated` (empty in demo mode: no
    thread hop per call when there is nothing to verify)."""
    api = APIRouter(dependencies=list(authenticated))
    discovery_body = orjson.dumps(pipeline.discovery())

    @api.get(
        "/cds-services",
        summary="CDS Hooks discovery",
        responses=openapi.responses(200, 401, discovery=True),
    )
    async def discovery() -> Response:
        return Response(discovery_body, media_type="application/json")

    def evaluate_and_record(service_id: str, body: bytes, state: Any) -> HookResponse:
        try:
            answer = pipeline.answer(service_id, body, reports=True)
        except Exception:
            state.hook_instance = hook_instance(body)  # a body refused or failed: from its text
            raise
        state.hook_instance = loggable(answer.hook_instance)  # for the access line
        if answer.evaluation is not None:
            store.record(answer.evaluation)  # before the response: feedback can find its cards
            metrics.DETERMINATIONS.labels(service_id, answer.evaluation.outcome).inc()
        return answer.response

    @api.post(
        "/cds-services/{service_id}",
        summary="Call a CDS service (order-sign, order-select)",
        openapi_extra=openapi.request_body("HookRequest"),
        responses=openapi.responses(200, 400, 401, 404, 412, 413, 415),
    )
    async def call_service(service_id: str, request: Request) -> Response:
        pipeline.service(service_id)  # 404 before reading the body
        body = await read_body(request, max_body_bytes)
        return json_response(await pool.run(evaluate_and_record, service_id, body, request.state))

    def store_feedback(service_id: str, body: bytes) -> int:
        items = _feedback_items(body)
        stored = store.add_feedback(service_id, items)
        for item in items:
            metrics.FEEDBACK.labels(service_id, item.outcome).inc()
        return stored

    @api.post(
        "/cds-services/{service_id}/feedback",
        summary="Feedback on the cards a service returned",
        openapi_extra=openapi.request_body("FeedbackRequest"),
        responses=openapi.responses(200, 400, 401, 404, 413, 415, feedback=True),
    )
    async def feedback(service_id: str, request: Request) -> Response:
        pipeline.service(service_id)
        body = await read_body(request, max_body_bytes)
        stored = await run_in_threadpool(store_feedback, service_id, body)
        return json_response({"stored": stored})

    return api
