"""Running it as a hospital would: liveness and readiness, Prometheus metrics, JSON logs with
request ids, offline API docs with the real answers, evaluations that cannot starve discovery."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cds_service.app import create_app
from cds_service.core import logs
from tests.conftest import ValidatingClient, open_settings

SIGN = "/cds-services/ivig-order-sign"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[ValidatingClient]:
    with ValidatingClient(create_app(open_settings(tmp_path))) as c:
        yield c


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("json", "INFO", stream)
    yield stream
    logs.remove()


def _service_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """What the service logged (httpx is the test's own client)."""
    out = [json.loads(x) for x in stream.getvalue().splitlines()]
    return [x for x in out if x.get("logger") != "httpx"]


def _sample(text: str, name: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0].split()[-1]) if found else 0.0


# -- health -------------------------------------------------------------------------------
def test_healthz_and_readyz(app_client: ValidatingClient) -> None:
    assert app_client.get("/healthz").json()["status"] == "ok"
    ready = app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
    assert ready.json()["policy"]


def test_readyz_is_503_when_the_database_cannot_be_reached(app_client: ValidatingClient) -> None:
    store = app_client.app.state.storage  # type: ignore[attr-defined]
    reachable = store.engine
    # a real connection attempt to a port nothing listens on (psycopg is in the dev extra)
    store.engine = sa.create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 2}
    )
    try:
        answer = app_client.get("/readyz")
        assert app_client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        store.engine.dispose()
        store.engine = reachable
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "database": "unreachable"}


# -- metrics ------------------------------------------------------------------------------
def test_metrics_count_requests_determinations_and_feedback(
    app_client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    before = app_client.get("/metrics").text
    response = app_client.post(SIGN, json=seed_request).json()
    assert (
        app_client.post(
            SIGN, content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    card = response["cards"][0]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    }
    assert app_client.post(SIGN + "/feedback", json={"feedback": [item]}).status_code == 200
    assert app_client.get("/cds-services").status_code == 200
    scrape = app_client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    after = scrape.text
    svc = 'service="ivig-order-sign"'
    expected = {
        f'ivig_cds_requests_total{{endpoint="service",{svc},status="200"}}': 1,
        f'ivig_cds_requests_total{{endpoint="service",{svc},status="400"}}': 1,
        f'ivig_cds_requests_total{{endpoint="feedback",{svc},status="200"}}': 1,
        'ivig_cds_requests_total{endpoint="discovery",service="",status="200"}': 1,
        f'ivig_cds_request_duration_seconds_count{{endpoint="service",{svc}}}': 2,
        f'ivig_cds_determinations_total{{outcome="insufficient-documentation",{svc}}}': 1,
        f'ivig_cds_feedback_total{{outcome="overridden",{svc}}}': 1,
    }
    for name, grew in expected.items():
        assert _sample(after, name) - _sample(before, name) == grew, name
    assert (
        f'ivig_cds_request_duration_seconds_bucket{{endpoint="service",le="10.0",{svc}}}' in after
    )


# -- logs ---------------------------------------------------------------------------------
def test_request_id_is_honoured_echoed_and_on_every_line(
    app_client: ValidatingClient, seed_request: dict[str, Any], log_lines: io.StringIO
) -> None:
    given = "req-7f3a.42"
    r = app_client.post(SIGN, json=seed_request, headers={"X-Request-ID": given})
    assert r.headers["x-request-id"] == given
    made = app_client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    fresh = made.headers["x-request-id"]
    assert fresh != "bad id\twith spaces"
    assert len(fresh) == 32
    assert app_client.get("/healthz").headers["x-request-id"] not in (given, fresh)
    lines = _service_lines(log_lines)
    access = [x for x in lines if x["event"] == "access"]
    assert len(access) == 3
    sign = access[0]
    assert sign["request_id"] == given
    assert sign["method"] == "POST"
    assert sign["path"] == SIGN
    assert sign["service"] == "ivig-order-sign"
    assert sign["status"] == 200
    assert sign["hookInstance"] == seed_request["hookInstance"]
    assert sign["level"] == "info"
    assert sign["duration_ms"] > 0
    assert sign["timestamp"].endswith("Z")
    assert access[1]["request_id"] == fresh
    for line in lines:  # whatever else was logged during the call carries its request id
        assert "request_id" in line, line


def test_every_answer_leaves_an_access_line_even_errors(
    app_client: ValidatingClient, log_lines: io.StringIO
) -> None:
    app_client.post(SIGN, content=b"{", headers={"content-type": "application/json"})
    app_client.post(SIGN, content=b"x", headers={"content-type": "text/plain"})
    app_client.post("/cds-services/no-such-service", json={})
    app_client.get("/reports/no-such-report")
    access = [x for x in _service_lines(log_lines) if x["event"] == "access"]
    assert [(a["path"], a["status"]) for a in access] == [
        (SIGN, 400),
        (SIGN, 415),
        ("/cds-services/{id}", 404),  # an unknown id is not echoed into the logs
        ("/reports/{id}", 404),
    ]


def test_text_log_format_for_humans(app_client: ValidatingClient) -> None:
    stream = io.StringIO()
    logs.configure("text", "INFO", stream)
    try:
        app_client.get("/healthz", headers={"X-Request-ID": "r-1"})
    finally:
        logs.remove()
    line = next(x for x in stream.getvalue().splitlines() if "access" in x)
    assert not line.startswith("{")
    assert "request_id=r-1" in line
    assert "status=200" in line


# -- docs ---------------------------------------------------------------------------------
def test_docs_are_served_without_a_cdn(app_client: ValidatingClient) -> None:
    page = app_client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert "https://" not in page.text
    scripts = [p.split('"')[0] for p in page.text.split('src="')[1:]]
    assert scripts
    for src in scripts:
        asset = app_client.get(src)
        assert asset.status_code == 200, src
        assert len(asset.content) > 100_000  # the real Swagger UI bundle


def test_openapi_describes_the_hooks_and_the_real_error_answers(
    app_client: ValidatingClient,
) -> None:
    doc = app_client.get("/openapi.json").json()
    for path in doc["paths"].values():
        for op in path.values():
            assert "422" not in op["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    call = doc["paths"]["/cds-services/{service_id}"]["post"]
    assert set(call["responses"]) == {"200", "400", "401", "404", "412", "413", "415"}
    body = call["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = doc["components"]["schemas"]
    hook = schemas[body.rsplit("/", 1)[1]]
    assert {"hook", "hookInstance", "context"} <= set(hook["required"])
    ok = call["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert "cards" in schemas[ok.rsplit("/", 1)[1]]["properties"]
    problem = call["responses"]["412"]["content"]["application/json"]["schema"]["$ref"]
    assert "error" in schemas[problem.rsplit("/", 1)[1]]["properties"]
    fb = doc["paths"]["/cds-services/{service_id}/feedback"]["post"]
    assert fb["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "FeedbackRequest"
    )
    assert "410" in doc["paths"]["/reports/{report_id}"]["get"]["responses"]
    for name in ("/healthz", "/readyz", "/metrics", "/cds-services"):
        assert name in doc["paths"]


# -- evaluations do not starve the rest -----------------------------------------------------
def test_discovery_health_and_metrics_answer_while_evaluations_fill_every_slot(
    tmp_path: Path, seed_request: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More blocked evaluations than the shared thread pool has threads (40): the others still
    answer, because evaluations wait for one of `eval_threads` slots without holding a thread."""
    with ValidatingClient(create_app(open_settings(tmp_path, eval_threads=2))) as c:
        pipeline = c.app.state.pipeline  # type: ignore[attr-defined]
        release = threading.Event()
        running, peak = 0, 0
        lock = threading.Lock()
        answer = pipeline.answer

        def blocked(*args: Any, **kw: Any) -> Any:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            release.wait(30)
            with lock:
                running -= 1
            return answer(*args, **kw)

        monkeypatch.setattr(pipeline, "answer", blocked)
        results: list[int] = []
        calls = [
            threading.Thread(
                target=lambda: results.append(c.post(SIGN, json=seed_request).status_code)
            )
            for _ in range(45)
        ]
        for t in calls:
            t.start()
        try:
            deadline = time.monotonic() + 10
            while running < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # the other 43 are queued by now
            for path in ("/cds-services", "/healthz", "/readyz", "/metrics"):
                started = time.monotonic()
                assert c.get(path).status_code == 200, path
                assert time.monotonic() - started < 2.0, path
            assert peak == 2
        finally:
            release.set()
            for t in calls:
                t.join(60)
        assert results == [200] * 45


def test_the_readme_settings_table_names_every_setting() -> None:
    from cds_service.core.settings import Settings
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Settings", 1)[1].split("\n\n", 2)[1]
    missing = [n for n in Settings.model_fields if f"`IVIG_CDS_{n.upper()}`" not in table]
    assert not missing


def test_the_access_line_names_the_request_own_hook_instance_wherever_it_stands(
    app_client: ValidatingClient, seed_request: dict[str, Any], log_lines: io.StringIO
) -> None:
    """hookInstance is read from the parsed request (a key after a large prefetch is not a scan
    of the text, and a nested key of the same name is not it); a refused body still names its
    own from the text; a value that is not a plain token is never logged."""
    late = {k: v for k, v in seed_request.items() if k != "hookInstance"}
    late["prefetch"] = {
        **late["prefetch"],
        "note": {"resourceType": "Basic", "id": "x", "hookInstance": "nested-not-this-one"},
    }
    late["hookInstance"] = "the-request-own"
    body = json.dumps(late).encode()
    assert body.index(b'"nested-not-this-one"') < body.index(b'"the-request-own"')
    assert app_client.post(SIGN, content=body, headers=JSON).status_code == 200
    refused = {**seed_request, "hook": "patient-view", "hookInstance": "refused-one"}
    assert app_client.post(SIGN, json=refused).status_code == 400
    odd = {**seed_request, "hookInstance": "has spaces\tand a tab"}
    assert app_client.post(SIGN, json=odd).status_code == 200
    access = [x for x in _service_lines(log_lines) if x["event"] == "access"]
    assert [a.get("hookInstance") for a in access] == ["the-request-own", "refused-one", None]
