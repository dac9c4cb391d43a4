"""The FHIR server allowlist: a URL that leaves an allowed base by dot segments is rejected."""

from __future__ import annotations

import pytest

from cds_service.fhir.client import Allowlist


@pytest.mark.parametrize(
    "url",
    [
        "https://fhir.example.org/tenantA/../tenantB",
        "https://fhir.example.org/tenantA/./../tenantB",
        "https://fhir.example.org/tenantA/%2e%2e/tenantB",
        "https://fhir.example.org/tenantA/%2E%2e/tenantB",
        "https://fhir.example.org/tenantA/..",
        "https://fhir.example.org/tenantA/..%2Ftenant%42",
        "https://fhir.example.org/tenantA/..%5ctenantB",
    ],
)
def test_allowlist_rejects_dot_segments(url: str) -> None:
    allow = Allowlist(["https://fhir.example.org/tenantA"])
    assert allow.allows("https://fhir.example.org/tenantA/R4")
    assert not allow.allows(url)
