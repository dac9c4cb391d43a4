"""Draft orders as EHRs send them: an IG order is recognised by any of its codes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.scenario import (
    RXNORM,
    _draft,
    _finding,
    _order,
    _run,
)


def test_ig_by_rxnorm_and_hcpcs_codes(client: TestClient) -> None:
    for system, code in (
        (RXNORM, "1813423"),
        ("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "J1569"),
    ):

        def change(req: dict[str, Any], system: str = system, code: str = code) -> None:
            _order(req)["medicationCodeableConcept"] = {
                "coding": [{"system": system, "code": code}]
            }

        det = _run(client, change)
        assert det["dose"]["gramsPerDose"] == 35


def _rxnorm_only(code: str) -> Any:
    def change(req: dict[str, Any]) -> None:
        _draft(req)["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": code}]}

    return change


def test_an_order_coded_only_by_its_rxnorm_sbd_is_recognised(client: TestClient) -> None:
    det = _run(client, _rxnorm_only("1809518"))  # immunoglobulin G 100 MG/ML Injection [Privigen]
    assert det["outcome"] == "meets-criteria"
    assert _finding(det, "dose")["status"] == "met"


def test_an_order_coded_only_by_a_generic_rxnorm_clinical_drug_is_recognised(
    client: TestClient,
) -> None:
    det = _run(client, _rxnorm_only("1809417"))  # immunoglobulin G, human 100 MG/ML Injection
    assert _finding(det, "dose")["status"] == "met"
