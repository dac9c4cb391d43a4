"""CDS Hooks 2.0 wire models and request validation (spec: cds-hooks.hl7.org/2.0).

Models mirror the spec's camelCase names. The hook request is validated here, by hand where the
spec is hook-specific, so every client error becomes a 400 that names the offending field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds_service.core.errors import BadRequest

SUPPORTED_HOOKS = ("order-sign", "order-select")


class FhirAuthorization(BaseModel):
    """fhirAuthorization: the bearer token the service may use against fhirServer."""

    model_config = ConfigDict(extra="allow")
    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"FhirAuthorization(subject={self.subject!r}, scope={self.scope!r})"

    __str__ = __repr__


class OrderContext(BaseModel):
    """order-sign / order-select context (CDS Hooks library, hookVersion 1.0)."""

    model_config = ConfigDict(extra="allow")
    userId: str = Field(min_length=1)
    patientId: str = Field(min_length=1, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    encounterId: str | None = None
    draftOrders: dict[str, Any]
    selections: list[str] | None = None


class HookRequest(BaseModel):
    """A CDS Hooks 2.0 service request."""

    model_config = ConfigDict(extra="allow")
    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1, max_length=128)  # storage column width
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None


class ParsedRequest(BaseModel):
    request: HookRequest
    context: OrderContext


def _first_error(exc: ValidationError, prefix: str = "") -> BadRequest:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = "is required" if err.get("type") == "missing" else str(err.get("msg"))
    return BadRequest(f"{prefix}{loc}" or "(body)", msg)


# FHIR resources nest about a dozen levels (Bundle > entry > resource > component > code >
# coding...); anything far deeper is not a record and would reach recursive readers
MAX_JSON_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a decoded JSON value nests deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return False


_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether valid JSON text nests deeper than `limit`, read from the bytes in C-speed passes
    (a walk of the decoded value cost more than decoding it). Escaped backslashes and quotes go
    first, so the remaining quotes delimit strings; brackets inside strings are dropped; each
    pass then removes the innermost level of the bracket skeleton. Adjacent quotes (empty strings,
    or one string's end and the next one's start with no bracket between) go before the split:
    what remains between the remaining quote pairs is still string text, and most bodies then
    have no quote left to split on (the split of thousands of strings cost more than the rest)."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[0::2])
    levels = skeleton.translate(_AS_PARENS)
    for _ in range(limit):
        if not levels:
            return False
        levels = levels.replace(b"()", b"")
    return bool(levels)


def _json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("(body)", f"malformed JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadRequest("(body)", "must be a JSON object")
    if json_too_deep(body):
        raise BadRequest("(body)", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return raw


def parse_request(body: bytes, hook: str) -> ParsedRequest:
    """Validate a hook request body for a service registered on `hook`; raise BadRequest."""
    raw = _json_object(body)
    try:
        request = HookRequest.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc) from exc
    if request.hook != hook:
        raise BadRequest("hook", f"this service handles {hook!r}, not {request.hook!r}")
    if request.fhirAuthorization is not None and not request.fhirServer:
        raise BadRequest("fhirServer", "is required when fhirAuthorization is present")
    try:
        context = OrderContext.model_validate(request.context)
    except ValidationError as exc:
        raise _first_error(exc, "context.") from exc
    drafts = context.draftOrders
    if drafts.get("resourceType") != "Bundle":
        raise BadRequest("context.draftOrders", "must be a FHIR Bundle")
    entries = drafts.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest("context.draftOrders.entry", "must be an array")
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise BadRequest(f"context.draftOrders.entry[{i}].resource", "must be a FHIR resource")
    if hook == "order-select" and not context.selections:
        raise BadRequest("context.selections", "is required for order-select")
    if request.prefetch is not None and not isinstance(request.prefetch, dict):
        raise BadRequest("prefetch", "must be an object")
    return ParsedRequest(request=request, context=context)


# -- feedback (CDS Hooks 2.0 "Feedback") ---------------------------------------------------------


class FeedbackCoding(BaseModel):
    model_config = ConfigDict(extra="allow")
    # no longer than their storage columns (a longer value would be a 500 on PostgreSQL)
    code: str = Field(min_length=1, max_length=64)
    system: str = Field(min_length=1, max_length=200)
    display: str | None = Field(default=None, max_length=200)


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: FeedbackCoding | None = None
    userComment: str | None = None


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)


class FeedbackEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(min_length=1, max_length=40)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    # one per card returned (a handful): bounded, as each item is a look-up in one write transaction
    feedback: list[FeedbackEntry] = Field(min_length=1, max_length=100)


def parse_feedback(body: bytes) -> FeedbackRequest:
    """Validate a feedback body; raise BadRequest naming the field."""
    raw = _json_object(body)
    try:
        request = FeedbackRequest.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc) from exc
    for i, item in enumerate(request.feedback):
        where = f"feedback.{i}"
        try:
            stamp = dt.datetime.fromisoformat(item.outcomeTimestamp.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest(f"{where}.outcomeTimestamp", "must be an ISO 8601 date-time") from exc
        if stamp.tzinfo is None or "T" not in item.outcomeTimestamp.upper():
            raise BadRequest(f"{where}.outcomeTimestamp", "must be a UTC date-time (RFC 3339)")
        if item.outcome == "accepted" and not item.acceptedSuggestions:
            raise BadRequest(f"{where}.acceptedSuggestions", "is required when outcome is accepted")
        if item.outcome == "accepted" and item.overrideReason is not None:
            raise BadRequest(f"{where}.overrideReason", "is only allowed with outcome overridden")
    return request
