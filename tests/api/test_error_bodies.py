"""Every error answer is a plain FHIR OperationOutcome with the issue code that fits its status,
and an unexpected error is one log line with an id the client can quote (issue 13, item 6)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.operationoutcome import OperationOutcome

from cds_service.app import create_app
from tests.conftest import open_settings, problem
from tests.support.scenario import BASE

URL = "/cds-services/ivig-order-sign"


def _outcome(r: Any) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    OperationOutcome.model_validate(body)  # strict: no member FHIR does not define
    assert r.headers["content-type"].startswith("application/json")
    return body


def _too_big() -> bytes:
    return b'{"hook": "' + b"x" * 2048 + b'"}'


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code"),
    [
        ("POST", URL, b'{"hook": ', "application/json", 400, "invalid"),
        ("POST", "/cds-services/nope", b"{}", "application/json", 404, "not-found"),
        ("GET", "/no/such/path", None, None, 404, "not-found"),
        ("PUT", URL, b"{}", "application/json", 405, "not-supported"),
        ("POST", URL, None, "application/json", 412, "incomplete"),
        ("POST", URL, _too_big(), "application/json", 413, "too-long"),
        ("POST", URL, b"{}", "text/plain", 415, "not-supported"),
        ("GET", "/reports/unknown", None, None, 404, "not-found"),
    ],
    ids=["400", "404-service", "404-path", "405", "412", "413", "415", "404-report"],
)
def test_error_answers_are_strict_operation_outcomes(
    tmp_path: Any,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    if status == 412:  # a required key absent, and no fhirServer to read it from
        req = json.loads(json.dumps(BASE))
        del req["prefetch"]["observations"]
        body = json.dumps(req).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    if path.startswith("/reports/"):  # a program asks (a browser gets the HTML 404 page)
        headers["Accept"] = "application/fhir+json"
    limit = 1024 if status == 413 else 20_000_000
    with TestClient(create_app(open_settings(tmp_path, max_body_bytes=limit))) as c:
        r = c.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text[:300]
    outcome = _outcome(r)
    assert [i["code"] for i in outcome["issue"]] == [code]
    assert problem(outcome)  # says what was wrong


def test_401_says_login(tmp_path: Any) -> None:
    settings = open_settings(tmp_path, jwt_required=True, jwt_issuers={})
    with TestClient(create_app(settings)) as c:
        r = c.get("/cds-services")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert [i["code"] for i in _outcome(r)["issue"]] == ["login"]


def test_an_unexpected_error_is_one_log_line_and_an_id_to_quote(
    client: TestClient, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Default TestClient: it raises what the server would have logged as a traceback, so an
    exception re-raised past the 500 (as Starlette does after an `Exception` handler) fails."""
    from cds_service.rules import registry as criteria

    def boom(ctx: Any) -> Any:
        raise RecursionError("patient Jane Doe, token abc")  # must not reach client or log

    monkeypatch.setitem(criteria.RULES, "age", boom)
    with caplog.at_level(logging.INFO), TestClient(client.app) as c:
        r = c.post(URL, json=BASE)
    assert r.status_code == 500
    outcome = _outcome(r)
    error_id = outcome["id"]
    assert [i["code"] for i in outcome["issue"]] == ["exception"]
    assert error_id in problem(outcome)
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1, [rec.getMessage() for rec in errors]
    assert errors[0].getMessage() == f"internal error {error_id}: RecursionError"
    assert errors[0].exc_info is None  # no traceback
    assert "Jane" not in caplog.text + r.text
    assert "abc" not in caplog.text + r.text


def test_an_unexpected_error_is_a_json_500_without_details(
    client: TestClient, monkeypatch: Any
) -> None:
    from cds_service.rules import registry
    from cds_service.rules.criteria import age

    def boom(ctx: Any) -> Any:
        raise RuntimeError("patient Jane Doe, token abc")  # must not reach the client

    monkeypatch.setitem(registry.RULES, "age", boom)
    with TestClient(client.app, raise_server_exceptions=False) as c:
        r = c.post(URL, json=BASE)
    assert r.status_code == 500
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Jane" not in r.text
    assert "abc" not in r.text
    assert age.decide is not boom
