"""Prometheus metrics (prometheus-client), safe with several worker processes.

With PROMETHEUS_MULTIPROC_DIR set (``ivig-cds serve --workers N`` sets one when it is missing),
every process writes its samples to files there and ``/metrics`` adds them up, whichever worker
answers the scrape; without it, this process's own registry is served.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

# seconds: CDS Hooks clients commonly give up between 5 and 10 s
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "ivig_cds_requests_total",
    "HTTP requests answered, by endpoint, CDS service and status code",
    ["endpoint", "service", "status"],
)
LATENCY = Histogram(
    "ivig_cds_request_duration_seconds",
    "Time from request to the end of the response, by endpoint and CDS service",
    ["endpoint", "service"],
    buckets=LATENCY_BUCKETS,
)
DETERMINATIONS = Counter(
    "ivig_cds_determinations_total",
    "Determinations returned, by CDS service and outcome",
    ["service", "outcome"],
)
FETCH_LATENCY = Histogram(
    "ivig_cds_fetch_duration_seconds",
    "Time to read one prefetch key from the EHR's FHIR server (all its pages)",
    ["key"],
    buckets=LATENCY_BUCKETS,
)
FETCH_ERRORS = Counter(
    "ivig_cds_fetch_errors_total",
    "Prefetch keys that could not be read from the EHR's FHIR server",
    ["key"],
)
FEEDBACK = Counter(
    "ivig_cds_feedback_total",
    "Card feedback stored, by CDS service and outcome (accepted / overridden)",
    ["service", "outcome"],
)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
