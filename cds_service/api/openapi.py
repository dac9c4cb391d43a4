"""The OpenAPI document: the hook request and response shapes, and the answers the service
really gives (400/401/404/412/413/415 with an OperationOutcome-style body), not FastAPI's 422.

Hook and feedback bodies are read as bytes (size, media type and nesting are checked before
parsing), so FastAPI cannot infer their schemas: they come from the pydantic models that parse
them (`protocol.py`) and small models of what is answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from cds_service.protocol import FeedbackRequest, HookRequest

REF = "#/components/schemas/{model}"

WHY = {
    400: "Malformed request: the message names the field (never 422)",
    401: "Missing or invalid CDS client JWT (CDS Hooks 2.0 'Trusting CDS Clients')",
    404: "Unknown CDS service, card or report",
    410: "The report's evaluation was purged by the retention period (expired)",
    412: "Required data could neither be read from prefetch nor fetched from fhirServer",
    413: "Request body larger than IVIG_CDS_MAX_BODY_BYTES",
    415: "Body not sent as application/json",
}


class Issue(BaseModel):
    severity: str = "error"
    code: str = Field(description="invalid (4xx input) or processing")
    diagnostics: str


class Problem(BaseModel):
    """Error body: CDS Hooks 2.0 clients read `error`; it is also a FHIR OperationOutcome."""

    error: str
    resourceType: str = "OperationOutcome"
    issue: list[Issue]


class HookResponse(BaseModel):
    """CDS Hooks 2.0 response (cards; CRD coverage information in systemActions)."""

    cards: list[dict[str, Any]]
    systemActions: list[dict[str, Any]] | None = None


class Discovery(BaseModel):
    services: list[dict[str, Any]]


class FeedbackStored(BaseModel):
    stored: int = Field(description="feedback entries written")


MODELS: list[type[BaseModel]] = [
    HookRequest,
    FeedbackRequest,
    HookResponse,
    Discovery,
    FeedbackStored,
    Problem,
]


def _json(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}


def request_body(model: str) -> dict[str, Any]:
    """`openapi_extra` naming a body schema for an endpoint that reads raw bytes."""
    return {"requestBody": {"required": True, "content": _json(model)}}


def responses(
    *codes: int, discovery: bool = False, feedback: bool = False, html: bool = False
) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code == 200:
            if html:
                out[200] = {"description": "HTML report", "content": {"text/html": {}}}
            else:
                model = "Discovery" if discovery else "FeedbackStored" if feedback else None
                out[200] = {"description": "OK", "content": _json(model or "HookResponse")}
        elif html:
            out[code] = {"description": WHY[code], "content": {"text/html": {}}}
        else:
            out[code] = {"description": WHY[code], "content": _json("Problem")}
    return out


def customise(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """app.openapi: FastAPI's document plus the models above, without the 422 it never sends."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in MODELS:
            schema = model.model_json_schema(ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path in doc.get("paths", {}).values():
            for op in path.values():
                op.get("responses", {}).pop("422", None)
        app.openapi_schema = doc
        return doc

    return build
