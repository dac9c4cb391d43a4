"""Property: whatever a FHIR server answers, the service answers 200, 400 or 412, never a 5xx.

The seed record is served by a fake FHIR server with one element of one fetched resource replaced
by a value of another JSON type, or the answer's bytes cut short or split oddly; it reaches the
streaming reader and the record builder through the fetch path (not the prefetch path, which
tests/api/test_fuzz_input.py covers).
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.app import create_app
from tests.conftest import ValidatingClient, make_settings
from tests.support.fake_fhir import FaultServer, RecordedRequest, Reply, ehr_body, seed_routes
from tests.support.fuzz import odd_values, slots

URL = "/cds-services/ivig-order-sign"
# CI runs a fixed, reproducible set; IVIG_FUZZ_EXAMPLES=1000 explores further (random seeds).
EXAMPLES = int(os.environ.get("IVIG_FUZZ_EXAMPLES", "0"))
TYPES = ("Condition", "Observation", "MedicationStatement", "Immunization")


@pytest.fixture(scope="module")
def fetch_client() -> Iterator[TestClient]:
    with ValidatingClient(create_app(make_settings(demo=True, fetch_budget_s=3.0))) as c:
        yield c


@pytest.fixture(scope="module")
def fake() -> Iterator[FaultServer]:
    with FaultServer(seed_routes()) as srv:
        yield srv


def _mutating(route: Any, mutate: Any) -> Any:
    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        reply: Reply = srv.resolve(route, req)
        body = copy.deepcopy(reply.body)
        return Reply(raw=mutate(body), status=reply.status)

    return handle


@settings(
    max_examples=EXAMPLES // 4 or 40,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_odd_fetched_answers_never_give_a_5xx(
    fetch_client: TestClient, fake: FaultServer, data: st.DataObject
) -> None:
    rtype = data.draw(st.sampled_from(TYPES))
    how = data.draw(st.sampled_from(["element", "cut", "whitespace"]))
    seed = data.draw(st.integers(0, 2**32))  # the fake server's threads pick with their own Random
    value = data.draw(odd_values)
    cut = data.draw(st.integers(1, 400))

    def mutate(body: Any) -> bytes:
        pick = random.Random(seed)
        entries = [e["resource"] for e in (body or {}).get("entry", [])]
        if how == "element" and entries:
            places = slots(pick.choice(entries))
            if places:
                container, key = pick.choice(places)
                container[key] = value
        raw = json.dumps(body).encode()
        if how == "cut":
            return raw[: max(0, len(raw) - cut)]
        if how == "whitespace":
            return raw.replace(b",", b" ,\n\t", cut % 7)
        return raw

    routes = seed_routes()
    fake.set(rtype, _mutating(routes[rtype], mutate))
    try:
        r = fetch_client.post(URL, json=ehr_body(fake.base_url))
    finally:
        fake.set(rtype, routes[rtype])
    assert r.status_code in (200, 400, 412), r.text[:500]
