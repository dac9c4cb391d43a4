"""The diagnosis criterion: which coded conditions are the covered primary immunodeficiency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.support.scenario import (
    ICD,
    SNOMED,
    _finding,
    _resource,
    _run,
)


def _recode_cvid(system: str, code: str) -> Callable[[dict[str, Any]], None]:
    def change(req: dict[str, Any]) -> None:
        _resource(req, "conditions", "-cvid")["code"] = {
            "coding": [{"system": system, "code": code}]
        }

    return change


def test_general_immunodeficiency_snomed_is_not_a_covered_diagnosis(client: TestClient) -> None:
    found = _finding(_run(client, _recode_cvid(SNOMED, "234532001")), "diagnosis")
    assert found["status"] == "insufficient"
    assert "general immunodeficiency" in found["reason"]


def test_pi_code_off_the_covered_list_is_not_met(client: TestClient) -> None:
    found = _finding(_run(client, _recode_cvid(ICD, "D80.1")), "diagnosis")
    assert found["status"] == "not-met"
    assert "D80.1" in found["reason"]
    assert "§50.6" in found["reason"]


def test_unverified_snomed_cvid_candidate_is_not_matched(client: TestClient) -> None:
    assert (
        _finding(_run(client, _recode_cvid(SNOMED, "5908001")), "diagnosis")["status"] == "not-met"
    )


def test_cvid_coded_in_snomed_only_is_the_covered_diagnosis(client: TestClient) -> None:
    det = _run(client, _recode_cvid(SNOMED, "23238000"))
    assert _finding(det, "diagnosis")["status"] == "met"
    assert det["outcome"] == "meets-criteria"


def test_undotted_icd10cm_codes_match(client: TestClient) -> None:
    det = _run(client, _recode_cvid(ICD, "D839"))
    assert _finding(det, "diagnosis")["status"] == "met"


def test_apds_newer_than_the_list_needs_the_reviewers_decision(client: TestClient) -> None:
    for system, code in ((ICD, "D81.82"), (SNOMED, "711480000")):
        found = _finding(_run(client, _recode_cvid(system, code)), "diagnosis")
        assert found["status"] == "insufficient", (system, code)
        assert "reviewer's decision" in found["missing"][0]


def test_a_pi_code_the_list_excludes_is_still_not_met(client: TestClient) -> None:
    assert _finding(_run(client, _recode_cvid(ICD, "D80.1")), "diagnosis")["status"] == "not-met"


def test_unreadable_condition_makes_diagnosis_insufficient_not_not_met(client: TestClient) -> None:
    """The CVID Condition itself cannot be read (malformed onset): the diagnosis is not shown to
    be absent, so 'not-met' (and does-not-meet-criteria) would rest on no documented evidence."""
    from tests.support.scenario import _entries, _finding, _run

    def change(req: dict[str, Any]) -> None:
        for e in _entries(req, "conditions"):
            codes = [c.get("code", "") for c in e["resource"]["code"].get("coding", [])]
            if any(str(c).startswith("D83") for c in codes):
                e["resource"]["onsetDateTime"] = "2025-13-45"

    det = _run(client, change)
    finding = _finding(det, "diagnosis")
    assert finding["status"] == "insufficient"
    assert finding["evidence"]
