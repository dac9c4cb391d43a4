"""Per-request observation (pure ASGI middleware): request id, access log line, request metrics.

`X-Request-ID` is honoured when it is a plain token (else a new one is made) and echoed on every
response; it is bound to the logging context, so every line logged while answering carries it.
The access line names the route, never the raw path: a report URL is a capability and a path
may carry anything a client sent. `hookInstance` comes from the endpoint (``scope["state"]``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

import structlog

from cds_service.core import metrics

log = logging.getLogger("cds_service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# what a client-chosen id (X-Request-ID, hookInstance) must be to reach the logs as it was sent
_TOKEN = r"[A-Za-z0-9._:\-]{1,128}"
PLAIN_TOKEN = re.compile(_TOKEN)
HOOK_INSTANCE = re.compile(rb'"hookInstance"\s*:\s*"(' + _TOKEN.encode() + rb')"')


def hook_instance(body: bytes) -> str | None:
    """The hookInstance of a body the service could not read, for the logs (a plain token only),
    found in the text: a scan of the whole body when the key comes late (~2 ms for 3 MB)."""
    m = HOOK_INSTANCE.search(body)
    return m.group(1).decode() if m else None


def loggable(value: str | None) -> str | None:
    """A client-chosen id (X-Request-ID, the parsed hookInstance) for the logs: a plain token."""
    return value if value is not None and PLAIN_TOKEN.fullmatch(value) else None


def route(path: str, services: Collection[str]) -> tuple[str, str, str]:
    """(endpoint, service, path as logged) for a request path; unknown ids are not echoed."""
    parts = path.strip("/").split("/")
    if parts[0] == "cds-services":
        if len(parts) == 1:
            return "discovery", "", "/cds-services"
        service = parts[1] if parts[1] in services else "unknown"
        shown = parts[1] if service != "unknown" else "{id}"
        if len(parts) == 2:
            return "service", service, f"/cds-services/{shown}"
        if len(parts) == 3 and parts[2] == "feedback":
            return "feedback", service, f"/cds-services/{shown}/feedback"
        return "other", "", "/cds-services/…"
    if parts[0] == "reports":
        return "report", "", "/reports/{id}"
    if path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        return path.strip("/"), "", path
    return "other", "", "(other)"


class Observe:
    def __init__(self, app: ASGIApp, services: Collection[str]) -> None:
        self.app = app
        self.services = frozenset(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        request_id = loggable(given) or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        state = scope.setdefault("state", {})
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            endpoint, service, shown = route(scope["path"], self.services)
            metrics.REQUESTS.labels(endpoint, service, str(status)).inc()
            metrics.LATENCY.labels(endpoint, service).observe(elapsed)
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": shown,
                "status": status,
                "duration_ms": round(elapsed * 1000, 1),
            }
            if service:
                fields["service"] = service
            if state.get("hook_instance"):
                fields["hookInstance"] = state["hook_instance"]
            log.info("access", extra=fields)
            structlog.contextvars.unbind_contextvars("request_id")
