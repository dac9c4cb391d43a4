"""Fetching from fhirServer against a controllable fake: every fault ends in a clear 412 or a
partial determination that names what was unavailable; never a hang, never a 500."""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.core import logs
from cds_service.fhir.client import Allowlist, render_template
from tests.conftest import (
    DETERMINATION_KEY,
    FIXTURES,
    ValidatingClient,
    load_json,
    make_settings,
    problem,
)
from tests.support.fake_fhir import (
    PATIENT,
    SEED,
    TOKEN,
    TYPES,
    FaultServer,
    RecordedRequest,
    Reply,
    delayed,
    ehr_body,
    error,
    huge_searchset,
    malformed_json,
    operation_outcome,
    paging_loop,
    record_search,
    searchset,
    seed_routes,
    sequence,
)
from tools.harness import record_resources

URL = "/cds-services/ivig-order-sign"
BUDGET = 1.0
EXPECTED = load_json(FIXTURES / "seed" / "expected-determination.json")


@pytest.fixture(scope="module")
def fetch_client() -> Iterator[TestClient]:
    """The app with loopback FHIR servers allowed (demo) and a short budget for fast tests."""
    settings = make_settings(demo=True, fetch_budget_s=BUDGET, fetch_timeout_s=0.8)
    with ValidatingClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def fake() -> Iterator[FaultServer]:
    with FaultServer(seed_routes()) as srv:
        yield srv


def post(client: TestClient, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    t0 = time.monotonic()
    r = client.post(URL, json=body)
    return r.status_code, r.json(), time.monotonic() - t0


def determination(data: dict[str, Any]) -> dict[str, Any]:
    det: dict[str, Any] = data["cards"][0]["extension"][DETERMINATION_KEY]
    return det


# ------------------------------------------------------------------------------ happy path


def test_all_keys_fetched_gives_the_prefetch_determination(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    assert determination(data) == EXPECTED
    paths = sorted(r.path for r in fake.requests)
    assert paths.count("Observation") >= 3  # observations, labs, titers (split when long)
    assert all(len(fake.url_for(r.target.removeprefix("/fhir/"))) <= 2048 for r in fake.requests)
    assert f"Patient/{PATIENT}" in paths
    for req in fake.requests:
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        assert req.headers["accept"] == "application/fhir+json"
        if req.path != f"Patient/{PATIENT}":
            assert req.param("patient") == PATIENT
            assert req.param("_count") == "200"
    codes = {req.param("code") for req in fake.requests_to("Observation")}
    assert any(c and "http://loinc.org|2465-3" in c for c in codes)


def test_only_absent_and_outcome_keys_are_fetched(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    body = ehr_body(fake.base_url, keep=tuple(k for k in SEED["prefetch"] if k != "conditions"))
    body["prefetch"]["encounters"] = operation_outcome("EHR could not run this prefetch")
    body["prefetch"]["medicationDispenses"] = None  # null: the EHR holds none; not fetched
    status, data, _ = post(fetch_client, body)
    assert status == 200, data
    assert determination(data) == EXPECTED
    assert sorted(r.path for r in fake.requests) == ["Condition", "Encounter"]


def test_paginated_prefetch_is_read_whole_from_the_server(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    body = ehr_body(fake.base_url, keep=tuple(SEED["prefetch"]))
    first_page = body["prefetch"]["conditions"]
    first_page["entry"] = first_page["entry"][:1]
    first_page["link"] = [{"relation": "next", "url": f"{fake.base_url}/Condition?page=2"}]
    status, data, _ = post(fetch_client, body)
    assert status == 200, data
    assert determination(data) == EXPECTED
    assert [r.path for r in fake.requests] == ["Condition"]


def test_paginated_prefetch_without_a_server_is_412(fetch_client: TestClient) -> None:
    body = copy.deepcopy(SEED)
    body["prefetch"]["conditions"]["link"] = [{"relation": "next", "url": "http://x/p2"}]
    status, data, _ = post(fetch_client, body)
    assert status == 412, data
    assert "conditions: prefetch holds only the first page" in problem(data)


def test_crd_coverage_is_fetched_for_this_patient_only(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    def coverage(rid: str, patient: str) -> dict[str, Any]:
        return {
            "resourceType": "Coverage",
            "id": rid,
            "status": "active",
            "beneficiary": {"reference": f"Patient/{patient}"},
            "payor": [{"display": "A payer"}],
        }

    fake.set(
        "Coverage", searchset([coverage("cov-other", "someone-else"), coverage("cov-1", PATIENT)])
    )
    body = ehr_body(fake.base_url, keep=tuple(SEED["prefetch"]))
    body["prefetch"].pop("coverage", None)
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft.pop("insurance", None)  # nothing names the coverage: one query to fhirServer
    status, data, _ = post(fetch_client, body)
    assert status == 200, data
    assert [r.path for r in fake.requests] == ["Coverage"]
    assert fake.requests[0].param("status") == "active"
    text = json.dumps(data)
    assert "Coverage/cov-1" in text
    assert "cov-other" not in text


def test_open_server_without_authorization_is_queried_without_a_token(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    status, data, _ = post(fetch_client, ehr_body(fake.base_url, token=False))
    assert status == 200, data
    assert all("authorization" not in r.headers for r in fake.requests)


def test_another_patients_resource_makes_the_search_unreadable(
    fetch_client: TestClient, fake: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A search for this patient answered with another patient's Condition cannot be trusted as
    this patient's record: the key is unreadable (412 for a required key), as with prefetch;
    resources of other types are still dropped."""
    intruder = {
        "resourceType": "Condition",
        "id": "other-patient-cvid",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D80.1"}]},
        "subject": {"reference": "Patient/someone-else"},
    }
    odd = {"resourceType": "Observation", "id": "odd", "status": "final", "code": {}}
    seed_conditions = [r for r in record_resources(SEED) if r["resourceType"] == "Condition"]
    fake.set("Condition", searchset([*seed_conditions, intruder, odd]))
    with caplog.at_level(logging.INFO, logger="cds_service"):
        status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 412, data
    assert "conditions" in str(data)
    assert "other-patient-cvid" not in str(data)
    fake.set("Condition", searchset([*seed_conditions, odd]))
    with caplog.at_level(logging.INFO, logger="cds_service"):
        status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    assert determination(data) == EXPECTED
    assert "dropped entries" in caplog.text


def test_tokens_and_patient_ids_are_never_logged(
    fetch_client: TestClient, fake: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked on every line the service writes (JSON, as deployed): the message and every
    field, for an evaluation that fetches, a client JWT, a report link and a bad request."""
    fake.set("Encounter", error(500))
    stream = io.StringIO()
    logs.configure("json", "DEBUG", stream)
    jwt_like = "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJlaHIifQ.c2lnbmF0dXJl"
    try:
        with caplog.at_level(logging.DEBUG):
            status, data, _ = post(fetch_client, ehr_body(fake.base_url))
            report = next(
                link["url"] for link in data["cards"][0]["links"] if "/reports/" in link["url"]
            )
            report_id = report.rsplit("/", 1)[1]
            assert fetch_client.get(f"/reports/{report_id}").status_code == 200
            bad = {**ehr_body(fake.base_url), "context": {"patientId": PATIENT}}
            headers = {"Authorization": f"Bearer {jwt_like}"}
            assert fetch_client.post(URL, json=bad, headers=headers).status_code == 400
    finally:
        logs.remove()
    assert status == 200, data
    assert caplog.records, "the fetch path logs what it did"
    assert TOKEN not in caplog.text
    assert PATIENT not in caplog.text
    # httpx is the test's client (TestClient), not the service
    lines = [x for x in stream.getvalue().splitlines() if '"logger": "httpx"' not in x]
    assert len(lines) >= 4, lines
    for line in lines:
        entry = json.loads(line)  # every line one JSON object
        # the fetch threads' lines too: every line written while answering names its request
        assert {"timestamp", "level", "event", "request_id"} <= entry.keys(), line
        for secret in (TOKEN, PATIENT, report_id, jwt_like):
            assert secret not in line, line
    access = [json.loads(x) for x in lines if json.loads(x)["event"] == "access"]
    assert [a["status"] for a in access] == [200, 200, 400]
    assert access[1]["path"] == "/reports/{id}"


def test_fetch_latency_and_errors_are_counted_by_prefetch_key(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    fake.set("Encounter", error(500))
    before = fetch_client.get("/metrics").text
    status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    after = fetch_client.get("/metrics").text

    def sample(text: str, name: str) -> float:
        found = [line for line in text.splitlines() if line.startswith(name + " ")]
        return float(found[0].split()[-1]) if found else 0.0

    for name, grew in [
        ('ivig_cds_fetch_duration_seconds_count{key="conditions"}', 1),
        ('ivig_cds_fetch_errors_total{key="encounters"}', 1),
        ('ivig_cds_fetch_errors_total{key="conditions"}', 0),
    ]:
        assert sample(after, name) - sample(before, name) == grew, name


# ------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("route", "words"),
    [
        (error(500), "HTTP 500"),
        (error(401), "refused access (HTTP 401)"),
        (error(403), "refused access (HTTP 403)"),
        (malformed_json(), "malformed JSON"),
        (error(429, retry_after=0), "overloaded or unavailable (HTTP 429)"),
        (paging_loop(), "paging loops"),
        (Reply(body={"resourceType": "Patient", "id": "x"}), "where a search Bundle"),
        (Reply(body={"resourceType": "Bundle", "type": "collection"}), "not a searchset"),
        (Reply(302, headers={"Location": "http://example.org/"}), "redirect"),
        (
            Reply(body={**searchset([]), "entry": [{"resource": operation_outcome("boom")}]}),
            "reported an error",
        ),
    ],
    ids=[
        "500",
        "401",
        "403",
        "malformed-json",
        "429-after-retries",
        "paging-loop",
        "not-a-bundle",
        "wrong-bundle-type",
        "redirect",
        "outcome-entry",
    ],
)
def test_required_key_fault_is_412_naming_it(
    fetch_client: TestClient, fake: FaultServer, route: Any, words: str
) -> None:
    fake.set("Observation", route)
    status, data, elapsed = post(fetch_client, ehr_body(fake.base_url))
    assert status == 412, data
    assert "observations" in problem(data)
    assert words in problem(data)
    assert TOKEN not in problem(data)
    assert elapsed < BUDGET + 1.5


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    """The app with the default budget (3 s) and caps."""
    with ValidatingClient(create_app(make_settings(demo=True))) as c:
        yield c


@pytest.mark.parametrize(
    ("route", "words"),
    [
        (huge_searchset(10_000, patient=PATIENT), "more than 5000 resources"),
        (huge_searchset(10_000, page_size=100, patient=PATIENT), "more than 20 pages"),
    ],
    ids=["10000-results", "10000-paged"],
)
def test_a_huge_search_is_412_not_a_hang(
    default_client: TestClient, fake: FaultServer, route: Any, words: str
) -> None:
    fake.set("Observation", route)
    status, data, elapsed = post(default_client, ehr_body(fake.base_url))
    assert status == 412, data
    assert "observations" in problem(data)
    # on a busy machine the per-query timeout or the budget may come first
    assert any(w in problem(data) for w in (words, "time budget", "did not answer within"))
    assert elapsed < 3.0 + 1.5


def test_slow_server_past_the_budget_is_412_on_time(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    fake.set("Condition", delayed(10))
    status, data, elapsed = post(fetch_client, ehr_body(fake.base_url))
    assert status == 412, data
    assert "conditions" in problem(data)
    assert elapsed < BUDGET + 1.0


def test_all_keys_slow_in_parallel_still_ends_on_time(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    for rtype in TYPES:
        fake.set(rtype, delayed(0.4, searchset([])))
    status, data, elapsed = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data  # 10 queries x 0.4 s run concurrently within the 1 s budget
    assert elapsed < BUDGET + 0.5


@pytest.mark.parametrize("key_type", ["Encounter", "Immunization"])
def test_optional_key_fault_gives_a_partial_determination(
    fetch_client: TestClient, fake: FaultServer, key_type: str
) -> None:
    fake.set(key_type, delayed(10))
    status, data, elapsed = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    det = determination(data)
    key = {"Encounter": "encounters", "Immunization": "immunizations"}[key_type]
    assert list(det["unavailable"]) == [key]
    assert "within" in det["unavailable"][key]  # the per-query timeout or the overall budget
    assert det["outcome"] != "meets-criteria"
    assert elapsed < BUDGET + 1.0


def test_unreadable_optional_labs_never_count_as_met(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    def by_code(req: RecordedRequest, srv: FaultServer) -> Reply:
        if "2465-3" in (req.param("code") or ""):
            return record_search(record_resources(SEED))(req, srv)
        return error(500)

    fake.set("Observation", by_code)
    status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    det = determination(data)
    assert sorted(det["unavailable"]) == ["labs", "titers", "titers2"]
    status_of = {c["id"]: c["status"] for c in det["criteria"]}
    assert status_of["vaccine-response"] != "met"  # the titers that showed it were not read
    assert status_of["secondary-causes-excluded"] != "met"


def test_429_then_success_is_retried(fetch_client: TestClient, fake: FaultServer) -> None:
    fake.set("Condition", sequence([error(429, retry_after=0)], then=seed_routes()["Condition"]))
    status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    assert determination(data) == EXPECTED
    assert len(fake.requests_to("Condition")) == 2


def test_503_with_retry_after_beyond_the_budget_gives_up_at_once(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    fake.set("Condition", error(503, retry_after=30))
    status, data, elapsed = post(fetch_client, ehr_body(fake.base_url))
    assert status == 412, data
    assert "conditions: fhirServer is busy (HTTP 503) and a retry after 30 s" in problem(data)
    assert elapsed < BUDGET
    assert len(fake.requests_to("Condition")) == 1


def test_connection_refused_is_412(fetch_client: TestClient) -> None:
    with FaultServer({}) as gone:
        url = gone.base_url
    status, data, _ = post(fetch_client, ehr_body(url))
    assert status == 412, data
    assert "could not connect to fhirServer" in problem(data)


def test_next_link_to_another_host_is_not_followed(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    with FaultServer({"*": searchset([])}) as elsewhere:
        fake.set("Condition", searchset([], links={"next": f"{elsewhere.base_url}/x?page=2"}))
        status, data, _ = post(fetch_client, ehr_body(fake.base_url))
        assert elsewhere.requests == []  # the token never travels to another server
    assert status == 412, data
    assert "leaves fhirServer" in problem(data)


def test_next_links_are_followed_verbatim(fetch_client: TestClient, fake: FaultServer) -> None:
    fake.set(
        "Encounter", huge_searchset(250, page_size=100, resource_type="Encounter", patient=PATIENT)
    )
    status, data, _ = post(fetch_client, ehr_body(fake.base_url))
    assert status == 200, data
    pages = fake.requests_to("Encounter")
    assert [p.param("_getpagesoffset") for p in pages] == [None, "100", "200"]


def test_fhir_server_off_the_allowlist_is_never_contacted(fake: FaultServer) -> None:
    with TestClient(
        create_app(make_settings(fhir_allowlist=["https://ehr.example.org/fhir"]))
    ) as c:
        status, data, _ = post(c, ehr_body(fake.base_url))
    assert status == 412, data
    assert "allowlist" in problem(data)
    assert fake.requests == []


def test_full_prefetch_needs_no_allowlisted_server(fake: FaultServer) -> None:
    body = ehr_body(fake.base_url, keep=tuple(SEED["prefetch"]))
    with ValidatingClient(create_app(make_settings())) as c:
        status, data, _ = post(c, body)
    assert status == 200, data
    assert fake.requests == []


# ------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example.org/fhir", True),
        ("https://ehr.example.org/fhir/", True),
        ("https://EHR.example.org:443/fhir/r4", True),
        ("https://ehr.example.org/fhirx", False),
        ("http://ehr.example.org/fhir", False),
        ("https://ehr.example.org:8443/fhir", False),
        ("https://user:pw@ehr.example.org/fhir", False),
        ("https://evil.example.org/fhir", False),
        ("http://127.0.0.1:9999/fhir", False),
        ("file:///etc/passwd", False),
        ("not a url", False),
    ],
)
def test_allowlist(url: str, allowed: bool) -> None:
    assert Allowlist(["https://ehr.example.org/fhir"]).allows(url) is allowed


def test_loopback_allowed_only_in_demo() -> None:
    demo = Allowlist([], loopback=True)
    assert demo.allows("http://127.0.0.1:8080/fhir")
    assert demo.allows("http://localhost:1/fhir")
    assert demo.allows("http://[::1]:8080/fhir")
    assert not demo.allows("http://10.0.0.1/fhir")
    assert not Allowlist([]).allows("http://127.0.0.1:8080/fhir")


def test_allowlist_rejects_a_bad_entry() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Allowlist(["ftp://x"])


def test_template_tokens_are_filled_and_encoded() -> None:
    values = {"context.patientId": "a b&c", "userPractitionerId": "dr-1"}
    assert render_template("X?patient={{context.patientId}}", values) == "X?patient=a%20b%26c"
    assert render_template("X?p={{ userPractitionerId }}", values) == "X?p=dr-1"
    with pytest.raises(Exception, match=r"context\.encounterId"):
        render_template("Encounter/{{context.encounterId}}", {})


def test_long_code_lists_are_split_over_several_queries_with_the_same_result(
    fake: FaultServer,
) -> None:
    with ValidatingClient(create_app(make_settings(demo=True, fetch_max_url=400))) as c:
        status, data, _ = post(c, ehr_body(fake.base_url))
    assert status == 200, data
    assert determination(data) == EXPECTED
    observation_queries = fake.requests_to("Observation")
    assert len(observation_queries) > 10
    assert all(len(fake.url_for(r.target.removeprefix("/fhir/"))) <= 400 for r in fake.requests)
    asked = {c for r in observation_queries for c in (r.param("code") or "").split(",")}
    keys = c.app.state.pipeline.keys  # type: ignore[attr-defined]
    advertised = {
        code
        for k in keys
        if k.resource_type == "Observation"
        for code in k.query.split("code=")[1].split(",")
    }
    assert asked == advertised  # every code asked once the chunks are put together


def test_prefetch_templates_fit_in_a_get_url(client: TestClient) -> None:
    services = client.get("/cds-services").json()["services"]
    for template in services[0]["prefetch"].values():
        # percent-encoded, with the longest patient id the request model admits
        url = template.replace("{{context.patientId}}", "x" * 64).replace("|", "%7C")
        assert len(url) < 4096, template[:40]


def test_a_trickling_server_does_not_keep_a_worker_after_the_budget(
    fetch_client: TestClient, fake: FaultServer
) -> None:
    """One byte every 0.1 s of a search answer: the request answers at the budget, and the
    worker reading it hangs up then (it used to read on for as long as the server trickled,
    holding one of the shared workers: two such tenants starved everyone else)."""
    fake.set("Encounter", Reply(body=searchset([]), trickle=0.1))
    body = ehr_body(fake.base_url, keep=tuple(k for k in SEED["prefetch"] if k != "encounters"))
    status, data, elapsed = post(fetch_client, body)
    assert status == 200, data
    assert "encounters" in determination(data)["unavailable"]
    assert elapsed < BUDGET + 1.0
    waited = 0.0
    while fake.hung_up == 0 and waited < BUDGET + 2.0:
        time.sleep(0.05)
        waited += 0.05
    assert fake.hung_up >= 1, "the worker kept reading the trickle after the budget"
