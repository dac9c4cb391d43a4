"""The one fake FHIR search (tools/fake_fhir.py): tests, the benchmark and the harness trust it to
answer like a FHIR server for the parameters the service's templates use, so it is tested too."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from cds_service.fhir.query import PrefetchKey
from tools.fake_fhir import FaultServer, matches, prefetch, record_routes, search

LOINC = "http://loinc.org"


def _obs(rid: str, patient: str, code: str, status: str = "final", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


RECORD = [
    {"resourceType": "Patient", "id": "p1"},
    _obs("a", "p1", "2465-3"),
    _obs("b", "p1", "29463-7", status="cancelled"),
    _obs("c", "p2", "2465-3"),
    {
        "resourceType": "Condition",
        "id": "d",
        "subject": {"reference": "Patient/p1/_history/3"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D83.9"}]},
    },
    {"resourceType": "Coverage", "id": "e", "beneficiary": {"reference": "Patient/p1"}},
    _obs("f", "p1", "2465-3", subject={"reference": "http://elsewhere/fhir/Patient/p1"}),
]


def _ids(found: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in found]


def test_patient_matches_a_relative_reference_by_id_or_by_reference_without_version() -> None:
    assert _ids(search(RECORD, "Observation?patient=p1")) == ["a", "b"]
    assert _ids(search(RECORD, "Observation?patient=Patient/p1")) == ["a", "b"]
    assert _ids(search(RECORD, "Condition?patient=p1")) == ["d"]  # /_history/3 dropped
    assert _ids(search(RECORD, "Coverage?patient=p1")) == ["e"]  # beneficiary
    assert search(RECORD, "Observation?patient=p3") == []


def test_code_is_a_token_or_list_with_or_without_system() -> None:
    assert _ids(search(RECORD, f"Observation?patient=p1&code={LOINC}|2465-3")) == ["a"]
    assert _ids(search(RECORD, "Observation?patient=p1&code=29463-7,2465-3")) == ["a", "b"]
    assert search(RECORD, "Observation?patient=p1&code=http://other|2465-3") == []
    assert not matches({"resourceType": "Observation"}, [("code", "2465-3")])


def test_status_filters_and_paging_parameters_do_not() -> None:
    assert _ids(search(RECORD, "Observation?patient=p1&status=final,amended")) == ["a"]
    assert _ids(search(RECORD, "Observation?patient=p1&_count=1&_getpagesoffset=1")) == ["a", "b"]


def test_prefetch_answers_reads_and_searches_from_memory() -> None:
    keys = (
        PrefetchKey("patient", "Patient", "Patient/{{context.patientId}}", True),
        PrefetchKey("labs", "Observation", "Observation?patient={{context.patientId}}", True),
        PrefetchKey("gone", "Patient", "Patient/{{context.patientId}}", False),
    )
    out = prefetch(RECORD, keys[:2], "p1")
    assert out["patient"] == {"resourceType": "Patient", "id": "p1"}
    assert out["labs"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in out["labs"]["entry"]] == ["a", "b"]
    assert prefetch(RECORD, keys[2:], "nobody") == {"gone": None}


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _next_link(page: dict[str, Any]) -> str | None:
    return next((ln["url"] for ln in page.get("link", []) if ln["relation"] == "next"), None)


def test_record_routes_page_with_next_links_that_are_followed_verbatim() -> None:
    many = [_obs(f"o{i}", "p1", "2465-3") for i in range(5)]
    with FaultServer(record_routes([*RECORD, *many])) as fake:
        status, first = _get(fake.url_for("Observation?patient=p1&code=2465-3&_count=2"))
        assert status == 200
        assert first["total"] == 6
        seen = [e["resource"]["id"] for e in first["entry"]]
        page = first
        while nxt := next(
            (ln["url"] for ln in page.get("link", []) if ln["relation"] == "next"), None
        ):
            _, page = _get(nxt)
            seen += [e["resource"]["id"] for e in page["entry"]]
        assert seen == ["a", "o0", "o1", "o2", "o3", "o4"]
        assert _get(fake.url_for("Patient/p1")) == (200, {"resourceType": "Patient", "id": "p1"})
        status, outcome = _get(fake.url_for("Patient/p9"))
        assert status == 404
        assert outcome["resourceType"] == "OperationOutcome"
        status, empty = _get(fake.url_for("Immunization?patient=p1"))
        assert status == 200
        assert empty["total"] == 0
        assert empty["entry"] == []
        assert len(fake.requests) == 6  # every request recorded
