"""Prefetch, fetch and mixed paths agree on every scenario against a real FHIR R4 server.

Each scenario's record is loaded into the session's sekmet server (transaction of PUTs, ids
namespaced per scenario) and the determination is obtained four ways: full prefetch (no server),
no prefetch (everything fetched with fhirServer + fhirAuthorization), half of the keys prefetched,
and the fixture's own prefetch with fhirServer. All must be equal, and equal to the expected one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import FIXTURES, ValidatingClient, make_settings
from tests.support import fake_fhir
from tools import harness
from tools.local_fhir import FhirServer

URL = "/cds-services/ivig-order-sign"
SCENARIOS = harness.discover(FIXTURES)
AUTH = {
    "access_token": "integration-token",
    "token_type": "Bearer",
    "expires_in": 30,
    "scope": "patient/*.read",
    "subject": "ivig-cds",
}


@pytest.fixture(scope="module")
def live(fhir_server: FhirServer) -> Iterator[TestClient]:
    settings = make_settings(fhir_allowlist=[fhir_server.base_url])
    with ValidatingClient(create_app(settings)) as c:
        yield c


def _determination(client: TestClient, body: dict[str, Any]) -> dict[str, Any] | None:
    """The determination (None for a request without an IG order: no cards, no data read)."""
    r = client.post(URL, json=body)
    assert r.status_code == 200, r.text
    return harness.determination_of(r.json())


def test_there_are_scenarios() -> None:
    assert any(s.name == "seed" for s in SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_prefetch_fetch_and_mixed_agree(
    live: TestClient, fhir_server: FhirServer, scenario: harness.Scenario
) -> None:
    ns = harness.new_namespace()
    req = harness.namespace_request(scenario.request, ns)
    resources = harness.record_resources(req)
    fhir_server.load_transaction(harness.transaction(resources))
    keys = live.app.state.pipeline.keys  # type: ignore[attr-defined]
    full = {**req, "prefetch": fake_fhir.prefetch(resources, keys, req["context"]["patientId"])}
    fetched = {**harness.ehr_request(req, fhir_server.base_url), "fhirAuthorization": AUTH}
    names = [k.key for k in keys]
    mixed = {**harness.ehr_request(full, fhir_server.base_url, keep=names[::2])}
    own = {**req, "fhirServer": fhir_server.base_url}

    by_prefetch = _determination(live, full)
    assert by_prefetch is None or "unavailable" not in by_prefetch
    assert _determination(live, fetched) == by_prefetch, "all fetched"
    assert _determination(live, mixed) == by_prefetch, "half prefetched, half fetched"
    assert _determination(live, own) == by_prefetch, "the fixture's own prefetch + fetch"
    assert harness.strip_namespace(by_prefetch, ns) == scenario.expected


def test_unknown_patient_on_a_real_server_is_a_determination_without_data(
    live: TestClient, fhir_server: FhirServer
) -> None:
    seed = next(s for s in SCENARIOS if s.name == "seed")
    req = harness.namespace_request(seed.request, harness.new_namespace())  # nothing loaded
    r = live.post(URL, json=harness.ehr_request(req, fhir_server.base_url))
    assert r.status_code == 200, r.text  # a 404 read and empty searches: "no data", not an error
    det = harness.determination_of(r.json())
    assert det is not None
    assert det["outcome"] == "insufficient-documentation"
    assert "unavailable" not in det


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_the_order_of_results_does_not_matter(
    client: TestClient, scenario: harness.Scenario
) -> None:
    """Servers return search results in their own order: reversed entries, same determination."""
    body = copy.deepcopy(scenario.request)
    for value in (body.get("prefetch") or {}).values():
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            value["entry"].reverse()
    assert _determination(client, body) == scenario.expected
