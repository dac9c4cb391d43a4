"""The tests' entry to the one fake FHIR server (tools/fake_fhir.py), and the seed record on it.

The server and its search live in ``tools/`` so the benchmark can use them without depending on
the test suite; test modules import them from here, with the routes that serve the founding case.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.conftest import FIXTURES, load_json
from tools.fake_fhir import (
    FaultServer,
    RecordedRequest,
    Reply,
    Route,
    delayed,
    error,
    huge_searchset,
    malformed_json,
    matches,
    observation,
    operation_outcome,
    paging_loop,
    prefetch,
    record_routes,
    record_search,
    search,
    searchset,
    sequence,
)
from tools.harness import record_resources

__all__ = [
    "PATIENT",
    "SEED",
    "TOKEN",
    "TYPES",
    "FaultServer",
    "RecordedRequest",
    "Reply",
    "Route",
    "delayed",
    "ehr_body",
    "error",
    "huge_searchset",
    "malformed_json",
    "matches",
    "observation",
    "operation_outcome",
    "paging_loop",
    "prefetch",
    "record_routes",
    "record_search",
    "search",
    "searchset",
    "seed_routes",
    "sequence",
]

TOKEN = "s3cr3t-access-token-never-logged"
SEED = load_json(FIXTURES / "seed" / "order-sign-request.json")
PATIENT = SEED["context"]["patientId"]
TYPES = (
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "MedicationDispense",
    "Immunization",
    "Encounter",
)


def seed_routes() -> dict[str, Any]:
    """The seed record: its Patient read and a search route per type (no Coverage: a 404)."""
    resources = record_resources(SEED)
    routes: dict[str, Any] = {f"Patient/{PATIENT}": SEED["prefetch"]["patient"]}
    for rtype in TYPES:
        routes[rtype] = record_search(resources)
    return routes


def ehr_body(server: str, keep: tuple[str, ...] = (), token: bool = True) -> dict[str, Any]:
    """The seed request as an EHR with `server` sends it, prefetching only `keep`."""
    body = copy.deepcopy(SEED)
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in keep}
    body["fhirServer"] = server
    if token:
        body["fhirAuthorization"] = {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 30,
            "scope": "patient/*.read",
            "subject": "ivig-cds",
        }
    return body
