"""The FHIR-fetch path: order-sign without prefetch, the service reading a real FHIR server.

A local sekmet FHIR R4 server (tools.local_fhir, in .venv-fhir: `make fhir-server`) is
loaded with the same synthetic record the prefetch benchmark sends. Then:

- every query the service would send for the prefetch templates it advertises (GET
  /cds-services), built by the service's own fetcher (its `_count`, its split of long code
  lists), is timed on its own, following `next` links to the last page, over one keep-alive
  session: the slowest one's median is the floor of the fetch path (the service runs its
  queries concurrently; the slowest cannot be avoided);
- the service is sent the order-sign request with `fhirServer` + `fhirAuthorization` and no
  prefetch. If it answers with cards, its p50/p99 is measured and compared to that floor. If it
  has no fetch path (it answers 412, or an error), the result says so with its answer, and the
  query timings are still reported: nothing is estimated.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench import records
from cds_service.app import build_fetcher
from cds_service.core.settings import Settings
from cds_service.fhir.bundle import resources_of
from tools.fake_fhir import FaultServer, record_routes
from tools.local_fhir import FhirServer, FhirServerError, ensure_installed

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PATH = "/cds-services/ivig-order-sign"
QUERY_REPS, QUICK_QUERY_REPS = 30, 10
FETCH_REPS, QUICK_FETCH_REPS = 60, 20
# the concurrency-capable fake FHIR server: a realistic round trip of a hospital FHIR server
PARALLEL_LATENCY_MS = 20.0
PARALLEL_KEY = "parallel_server_20ms"


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """PUT every resource under its own id (sekmet keeps client ids on PUT)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _query(session: requests.Session, url: str) -> tuple[float, int, int]:
    """(ms, pages, entries) for one search, following next links."""
    t0 = time.perf_counter()
    pages = entries = 0
    next_url: str | None = url
    while next_url:
        resp = session.get(next_url, headers={"Accept": "application/fhir+json"}, timeout=60)
        resp.raise_for_status()
        body = resp.json()
        pages += 1
        is_bundle = body.get("resourceType") == "Bundle"
        entries += len(body.get("entry", []) or []) if is_bundle else 1
        next_url = next(
            (link["url"] for link in body.get("link", []) or [] if link.get("relation") == "next"),
            None,
        )
    return (time.perf_counter() - t0) * 1000.0, pages, entries


def _concurrently(urls: list[str], reps: int) -> float:
    """p50 ms of all the queries at once from a pool of keep-alive sessions (no evaluation): what
    the FHIR server itself allows; equal to the sum of the queries when it serves one at a time."""
    local = threading.local()

    def one(url: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        _query(local.session, url)

    times: list[float] = []
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, urls))  # warm-up: one connection per worker
        for _ in range(reps):
            t0 = time.perf_counter()
            list(pool.map(one, urls))
            times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 2)


def _templates(service_port: int) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", service_port, timeout=30)
    conn.request("GET", "/cds-services")
    discovery = json.loads(conn.getresponse().read())
    conn.close()
    service = next(s for s in discovery["services"] if s["id"] == "ivig-order-sign")
    prefetch: dict[str, str] = service.get("prefetch", {})
    return prefetch


def _post(service_port: int, body: bytes) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", service_port, timeout=120)
    t0 = time.perf_counter()
    conn.request("POST", SERVICE_PATH, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = (time.perf_counter() - t0) * 1000.0
    conn.close()
    return resp.status, data, elapsed


def _time_queries(
    templates: dict[str, str], base_url: str, patient_id: str, reps: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each query the service would send, timed on its own (following paging) over one
    keep-alive session: {name: {p50_ms, pages, entries}} and the URLs in the service's order."""
    per_query: dict[str, dict[str, Any]] = {}
    all_urls: list[str] = []
    # the URLs exactly as the service issues them: its _count, its split of long code lists
    fetcher = build_fetcher(Settings(demo=True))
    try:
        with requests.Session() as session:
            for key, template in templates.items():
                relative = template.replace("{{context.patientId}}", patient_id)
                if "?" in relative:
                    urls = fetcher._start_urls(base_url, relative)
                else:  # a read (Patient/{id}): sent as it is
                    urls = [f"{base_url}/{relative}"]
                all_urls += urls
                for i, url in enumerate(urls):
                    name = key if len(urls) == 1 else f"{key}#{i + 1}"
                    _query(session, url)  # warm-up
                    runs = [_query(session, url) for _ in range(reps)]
                    times = [r[0] for r in runs]
                    per_query[name] = {
                        "p50_ms": round(statistics.median(times), 2),
                        "pages": runs[0][1],
                        "entries": runs[0][2],
                    }
    finally:
        fetcher.close()
    return per_query, all_urls


def _time_service(
    service_port: int,
    request: dict[str, Any],
    base_url: str,
    quick: bool,
    slowest_ms: float,
    expected_cards: list[str] | None,
) -> dict[str, Any]:
    """order-sign with `fhirServer` and no prefetch: p50/p99 and the ratio to `slowest_ms`; or
    available=false with the service's answer when it does not fetch."""
    request = dict(request, fhirServer=base_url)
    request["fhirAuthorization"] = {
        "access_token": "bench-token",
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "patient/*.read",
        "subject": "ivig-cds-bench",
    }
    body = json.dumps(request).encode()
    status, data, _ = _post(service_port, body)
    answer = json.loads(data) if status == 200 else {}
    if status != 200 or not answer.get("cards"):
        return {
            "available": False,
            "reason": (
                "the service has no usable FHIR-fetch path yet: without prefetch it answers "
                f"HTTP {status}: {data.decode(errors='replace')[:300]}"
            ),
        }
    out: dict[str, Any] = {}
    if expected_cards is not None:
        # the same record read from the server must give the cards the prefetch gives
        out["same_cards_as_prefetch"] = _summaries(answer) == expected_cards
    reps = QUICK_FETCH_REPS if quick else FETCH_REPS
    times = [_post(service_port, body)[2] for _ in range(reps)]
    p50 = statistics.median(times)
    out.update(
        available=True,
        p50_ms=round(p50, 2),
        p99_ms=round(_percentile(times, 99), 2),
        ratio=round(p50 / slowest_ms, 2),
    )
    return out


def _summaries(response: dict[str, Any]) -> list[str]:
    return sorted(str(c.get("summary")) for c in response.get("cards", []))


def _summarise_queries(
    per_query: dict[str, dict[str, Any]], all_urls: list[str], reps: int
) -> dict[str, Any]:
    slowest = max(per_query, key=lambda k: per_query[k]["p50_ms"])
    return {
        "queries": len(per_query),
        "slowest_query": slowest,
        "slowest_query_ms": per_query[slowest]["p50_ms"],
        "sum_of_queries_ms": round(sum(q["p50_ms"] for q in per_query.values()), 2),
        "all_queries_concurrently_ms": _concurrently(all_urls, reps),
        "per_query": per_query,
    }


def measure_sekmet(
    n: int,
    quick: bool,
    log: Callable[[str], None],
    service_port: int,
    fhir_venv: Path = ROOT / ".venv-fhir",
    expected_cards: list[str] | None = None,
) -> dict[str, Any]:
    """Against the local sekmet FHIR server (it answers one request at a time)."""
    result: dict[str, Any] = {
        "available": False,
        "resources": n,
        "server": "sekmet (local FHIR R4 server; serves one request at a time)",
    }
    try:
        exe = ensure_installed(fhir_venv)
    except (FhirServerError, OSError) as exc:
        result["reason"] = f"local FHIR server could not be installed: {exc}"
        return result
    request = records.order_sign_request(n)
    prefetch = request.pop("prefetch")
    resources = [r for v in prefetch.values() for r in resources_of(v)]
    patient_id = request["context"]["patientId"]
    with FhirServer(exe) as fhir:
        t0 = time.perf_counter()
        fhir.load_transaction(transaction(resources), timeout=600)
        log(
            f"  fetch: sekmet {fhir.base_url} loaded {len(resources)} resources in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        reps = QUICK_QUERY_REPS if quick else QUERY_REPS
        per_query, all_urls = _time_queries(
            _templates(service_port), fhir.base_url, patient_id, reps
        )
        result.update(_summarise_queries(per_query, all_urls, reps))
        result.update(
            _time_service(
                service_port,
                request,
                fhir.base_url,
                quick,
                result["slowest_query_ms"],
                expected_cards,
            )
        )
    return result


# --------------------------------------------------------------------------------------------
# a FHIR server that answers concurrently, with a fixed per-request latency: the one fake FHIR
# server (tools/fake_fhir.py), serving the record through its search


def measure_parallel(
    n: int,
    quick: bool,
    log: Callable[[str], None],
    service_port: int,
    latency_ms: float = PARALLEL_LATENCY_MS,
    expected_cards: list[str] | None = None,
) -> dict[str, Any]:
    """Against a fake FHIR server (tools/fake_fhir.py, one thread per connection) that holds
    the same record and answers every request after `latency_ms`, however many run at once: the
    service's own concurrency, not the server's, decides how close it gets to the slowest query."""
    request = records.order_sign_request(n)
    prefetch = request.pop("prefetch")
    resources = [r for v in prefetch.values() for r in resources_of(v)]
    patient_id = request["context"]["patientId"]
    result: dict[str, Any] = {
        "available": False,
        "resources": n,
        "server": (
            f"fake FHIR server (tools/fake_fhir.py, threaded) answering every request after "
            f"{latency_ms:g} ms"
        ),
        "latency_per_request_ms": latency_ms,
    }
    with FaultServer(record_routes(resources, latency_ms / 1000.0)) as fake:
        log(f"  fetch: parallel fake server {fake.base_url}, {latency_ms:g} ms per request")
        reps = QUICK_QUERY_REPS if quick else QUERY_REPS
        per_query, all_urls = _time_queries(
            _templates(service_port), fake.base_url, patient_id, reps
        )
        result.update(_summarise_queries(per_query, all_urls, reps))
        result.update(
            _time_service(
                service_port,
                request,
                fake.base_url,
                quick,
                result["slowest_query_ms"],
                expected_cards,
            )
        )
    return result


def measure(
    n: int,
    quick: bool,
    log: Callable[[str], None],
    service_port: int,
    fhir_venv: Path = ROOT / ".venv-fhir",
) -> dict[str, Any]:
    """Both fetch measurements: {"sekmet": {...}, "parallel_server_20ms": {...}}."""
    status, data, _ = _post(service_port, json.dumps(records.order_sign_request(n)).encode())
    expected = _summaries(json.loads(data)) if status == 200 else None
    return {
        "sekmet": measure_sekmet(n, quick, log, service_port, fhir_venv, expected),
        PARALLEL_KEY: measure_parallel(n, quick, log, service_port, expected_cards=expected),
    }
