"""The wire protocol's input guards: deep JSON nesting is a 400 (or an unreadable fetched key),
never a RecursionError 500."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.protocol import MAX_JSON_DEPTH, json_too_deep, too_deep
from tests.conftest import problem
from tests.support.scenario import BASE, URL


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
_TRICKY = st.text(alphabet=["a", "[", "]", "{", "}", '"', "\\", "\n", "\u005c"], max_size=6)
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
