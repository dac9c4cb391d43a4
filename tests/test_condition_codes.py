"""Condition value sets on real problem lists (issue 10): SNOMED CT as well as ICD-10-CM (dotted
or not), viral bronchitis is not a bacterial infection, and a PI code newer than the policy's
covered list asks for the reviewer's decision instead of a denial."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.test_rule_variants import (
    ICD,
    SNOMED,
    _add,
    _condition,
    _entries,
    _finding,
    _recode_cvid,
    _run,
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


def test_nephrotic_syndrome_on_the_problem_list_in_snomed_only_is_a_cause(
    client: TestClient,
) -> None:
    det = _run(client, lambda r: _add(r, "conditions", _condition("ns", SNOMED, "52254009")))
    assert _finding(det, "secondary-causes-excluded")["status"] == "not-met"
    assert det["outcome"] == "does-not-meet-criteria"


def test_snomed_cll_and_hiv_are_causes(client: TestClient) -> None:
    for code in ("277473004", "91947003"):
        det = _run(client, lambda r, c=code: _add(r, "conditions", _condition("x", SNOMED, c)))
        assert _finding(det, "secondary-causes-excluded")["status"] == "not-met", code


def _recode_infections(system: str, codes: list[str]) -> Any:
    def change(req: dict[str, Any]) -> None:
        infections = [
            e["resource"] for e in _entries(req, "conditions") if "infection" in e["resource"]["id"]
        ]
        for res, code in zip(infections, codes, strict=True):
            res["code"] = {"coding": [{"system": system, "code": code}]}

    return change


def test_snomed_infections_count(client: TestClient) -> None:
    det = _run(client, _recode_infections(SNOMED, ["233607000", "75498004", "3110003"]))
    assert _finding(det, "infection-history")["status"] == "met"


def test_viral_bronchitis_is_not_a_bacterial_infection(client: TestClient) -> None:
    det = _run(client, _recode_infections(ICD, ["J20.5", "J20.6", "J20.4"]))
    assert _finding(det, "infection-history")["status"] == "insufficient"
    det = _run(client, _recode_infections(SNOMED, ["16146001", "195724003", "195739001"]))
    assert _finding(det, "infection-history")["status"] == "insufficient"
    det = _run(client, _recode_infections(ICD, ["J20.9", "J20.2", "J18.9"]))
    assert _finding(det, "infection-history")["status"] == "met"
