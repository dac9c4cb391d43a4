"""Every non-2xx answer in one shape: a FHIR OperationOutcome, mapped here from the service's
error hierarchy (cds_service.core.errors), from routing errors and from request validation; and the
catch-all that turns anything else into a 500 with an id to quote and one log line."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_service.core.errors import CdsError, Unauthorized

log = logging.getLogger(__name__)

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


def problem(
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
    return problem(
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


def install(app: FastAPI) -> None:
    """The handlers of the service's errors, routing errors and request validation errors."""

    @app.exception_handler(CdsError)
    def _cds_error(_: Request, exc: CdsError) -> JSONResponse:
        if exc.status_code >= 500:
            error_id = uuid.uuid4().hex
            log.error("internal error %s: %s", error_id, exc.message)
            return problem(exc.status_code, exc.message, None, error_id)
        if isinstance(exc, Unauthorized):
            return problem(401, exc.message, {"WWW-Authenticate": 'Bearer realm="cds-services"'})
        return problem(exc.status_code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # routing errors (no such path, method not allowed) in the same shape as every other
        return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return problem(400, f"{loc or '(body)'}: {err.get('msg')}")
