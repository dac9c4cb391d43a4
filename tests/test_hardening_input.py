"""Input hardening (issue 13, first items): deep JSON nesting is a 400 (or an unreadable fetched
key), never a RecursionError 500; hook and feedback bodies must be JSON (415 otherwise); an
unexpected error answers a JSON OperationOutcome, not a bare text 500."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.protocol import MAX_JSON_DEPTH, json_too_deep, too_deep
from tests.conftest import problem
from tests.test_rule_variants import BASE

URL = "/cds-services/ivig-order-sign"


def _deeply_nested_body(levels: int) -> bytes:
    """The base request with one Condition extension nested `levels` deep (built as text:
    Python's own JSON encoder would recurse too)."""
    marker = '"__DEEP__"'
    req: dict[str, Any] = json.loads(json.dumps(BASE))
    req["prefetch"]["conditions"]["entry"][0]["resource"]["extension"] = "__DEEP__"
    text = json.dumps(req)
    deep = '{"url":"x","valueString":"y"}'
    for _ in range(levels):
        deep = '{"url":"x","extension":[' + deep + "]}"
    return text.replace(marker, "[" + deep + "]").encode()


def test_deeply_nested_json_is_a_400_naming_it(client: TestClient) -> None:
    for levels in (200, 1000):
        r = client.post(
            URL, content=_deeply_nested_body(levels), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text[:200]
        assert "nested deeper" in problem(r.json()) or "depth limit" in problem(r.json())
    # ordinary FHIR nesting is far below the limit
    assert not too_deep(BASE)
    assert too_deep({"a": [[[[{}]]]]}, limit=4)
    assert MAX_JSON_DEPTH >= 32


# strings made of the characters that could fool a scan of the text: brackets, quotes, escapes
_TRICKY = st.text(alphabet=['a', '[', ']', '{', '}', '"', "\\", "\n", "\u005c"], max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, limit=st.integers(min_value=1, max_value=12))
def test_depth_read_from_the_text_equals_the_depth_of_the_value(value: Any, limit: int) -> None:
    """The request path measures nesting on the bytes (fast); the decoded walk is the oracle."""
    assert json_too_deep(orjson.dumps(value), limit) == too_deep(value, limit)
    assert json_too_deep(json.dumps(value, indent=1).encode(), limit) == too_deep(value, limit)


def test_a_body_that_is_not_json_is_a_415(client: TestClient) -> None:
    body = json.dumps(BASE).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {"Content-Type": content_type} if content_type else {}
        r = client.post(URL, content=body, headers=headers)
        assert r.status_code == 415, (content_type, r.status_code)
    r = client.post(URL, content=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200
    r = client.post(
        URL + "/feedback", content=b'{"feedback": []}', headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415


def test_an_unexpected_error_is_a_json_500_without_details(
    client: TestClient, monkeypatch: Any
) -> None:
    from cds_service.rules.criteria import age

    def boom(ctx: Any) -> Any:
        raise RuntimeError("patient Jane Doe, token abc")  # must not reach the client

    monkeypatch.setitem(__import__("cds_service.criteria").criteria.RULES, "age", boom)
    with TestClient(client.app, raise_server_exceptions=False) as c:
        r = c.post(URL, json=BASE)
    assert r.status_code == 500
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Jane" not in r.text
    assert "abc" not in r.text
    assert age.decide is not boom


def _serve(tmp_path: Any, **env: str) -> Any:
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("IVIG_CDS_")}
    base.pop("DATABASE_URL", None)
    base.update({"IVIG_CDS_DATABASE_PATH": str(tmp_path / "t.db"), **env})
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", "1"],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_configuration_errors_are_one_line_and_exit_2(tmp_path: Any) -> None:
    cases = [
        ({"IVIG_CDS_DEMO": "yes-please"}, "IVIG_CDS_DEMO"),
        ({"IVIG_CDS_JWT_REQUIRED": "true"}, "IVIG_CDS_JWT_ISSUERS is empty"),
        (
            {"IVIG_CDS_DEMO": "true", "DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/db"},
            "database",
        ),
        (
            {"IVIG_CDS_DEMO": "true", "IVIG_CDS_DATABASE_PATH": "/nonexistent/dir/ivig.db"},
            "database: ",
        ),
        ({"IVIG_CDS_JWT_ISSUERS": '{"https://ehr": "/nonexistent/jwks.json"}'}, "JWKS file"),
        (
            {"IVIG_CDS_JWT_ISSUERS": '{"https://ehr": {"jwks": "/x.json", "jku": "http://e/k"}}'},
            "must be https",
        ),
        ({"IVIG_CDS_JWT_ISSUERS": '{"https://ehr": {"jku": "https://e/k"}}'}, "JWKS: Field"),
    ]
    for env, says in cases:
        done = _serve(tmp_path, **env)
        assert done.returncode == 2, (env, done.stderr[-500:])
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("ivig-cds: cannot start: "), (env, lines[-3:])
        assert says in lines[-1], (env, lines[-1])
        assert "Traceback" not in done.stderr, env


def test_a_prefetch_key_with_more_resources_than_the_cap_is_not_read(client: TestClient) -> None:
    """50 000 IgG results used to be read in 7-8 s and stored whole; a key over the per-query
    cap (IVIG_CDS_FETCH_MAX_RESOURCES, 5000) is unreadable, as on the fetch path: 412 when the
    key is required."""
    req: dict[str, Any] = json.loads(json.dumps(BASE))
    entries = req["prefetch"]["observations"]["entry"]
    template = entries[0]["resource"]
    for i in range(5001):
        res = dict(template, id=f"igg-flood-{i}")
        entries.append({"resource": res})
    r = client.post(URL, json=req)
    assert r.status_code == 412
    assert "more than 5000 resources" in problem(r.json())
