"""Security review: defects found and fixed (each test failed before its fix)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cds_service.app import create_app
from cds_service.auth import JwtVerifier
from cds_service.errors import Unauthorized
from cds_service.fhir_client import Allowlist
from tests.api.test_auth import BASE, ISS, SIGN, _jwks, token
from tests.conftest import ValidatingClient, open_settings, problem

INJECTED = "<img/src=x/onerror=alert(1)>[click](https://evil.example)"


def _patient(req: dict[str, Any]) -> str:
    return str(req["context"]["patientId"])


def _details(client: ValidatingClient, req: dict[str, Any]) -> str:
    r = client.post(SIGN, json=req)
    assert r.status_code == 200, r.text
    return "\n".join(c["summary"] + "\n" + c["detail"] for c in r.json()["cards"])


# -- markdown / HTML from the client's record into card text ------------------------------------


def test_condition_code_is_not_echoed_as_markup_into_the_safety_card(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    req["prefetch"]["conditions"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c-inj",
                "subject": {"reference": f"Patient/{_patient(req)}"},
                "code": {
                    "coding": [
                        {"system": "http://x.example", "code": INJECTED},
                        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I82.401"},
                    ]
                },
            }
        }
    )
    text = _details(client, req)
    assert "Risk factors on record" in text
    assert "<img" not in text
    assert "evil.example" not in text


def test_igg_unit_is_not_echoed_as_markup_into_the_summary_card(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    req["prefetch"]["labs"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o-inj",
                "status": "final",
                "subject": {"reference": f"Patient/{_patient(req)}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
                "effectiveDateTime": "2025-01-01",
                "valueQuantity": {"value": 500, "unit": INJECTED},
            }
        }
    )
    text = _details(client, req)
    assert "Observation/o-inj" in text  # the issue is still reported
    assert "<img" not in text
    assert "evil.example" not in text


# -- JWT: a kid whose key type does not fit alg ------------------------------------------------


@pytest.mark.parametrize(("alg", "kid"), [("ES384", "rsa-1"), ("RS384", "ec-1")])
def test_alg_that_does_not_fit_the_kid_key_is_401_not_500(
    tmp_path: Path, alg: str, kid: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_jwks()))
    verifier = JwtVerifier({ISS: str(path)})
    with pytest.raises(Unauthorized):
        verifier.verify("Bearer " + token(alg=alg, kid=kid), [BASE + SIGN])


# -- fhirServer allowlist: dot segments leave the allowed base path ------------------------------


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


# -- request bodies are bounded -------------------------------------------------------------------


def test_oversized_bodies_are_413(tmp_path: Path, seed_request: dict[str, Any]) -> None:
    settings = open_settings(tmp_path, max_body_bytes=4096)
    with ValidatingClient(create_app(settings)) as c:
        body = json.dumps({**seed_request, "pad": "x" * 10_000})
        for path in (SIGN, SIGN + "/feedback"):
            r = c.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.status_code, r.text)
            # a lying Content-Length does not help: the body is counted as it arrives
            chunks = iter([body.encode()[i : i + 1000] for i in range(0, len(body), 1000)])
            r = c.post(path, content=chunks, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.status_code)
        small = c.post(SIGN, json={"hook": "order-sign"})
        assert small.status_code == 400


# -- client strings longer than their storage columns (a 500 on PostgreSQL) ---------------------


def test_overlong_hook_instance_is_400(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = {**seed_request, "hookInstance": "h" * 129}
    r = client.post(SIGN, json=req)
    assert r.status_code == 400, r.text
    assert "hookInstance" in problem(r.json())


@pytest.mark.parametrize(
    ("field", "value"),
    [("code", "c" * 65), ("system", "s" * 201), ("display", "d" * 201)],
)
def test_overlong_override_reason_is_400(
    client: ValidatingClient, seed_request: dict[str, Any], field: str, value: str
) -> None:
    card = client.post(SIGN, json=seed_request).json()["cards"][0]
    reason = {"code": "c", "system": "s", "display": "d", field: value}
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
                "overrideReason": {"reason": reason},
            }
        ]
    }
    r = client.post(SIGN + "/feedback", json=body)
    assert r.status_code == 400, r.text


# -- answers from fhirServer are bounded in bytes -----------------------------------------------


def test_an_oversized_fhir_answer_is_unreadable_not_held_in_memory(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from tests.support.fake_fhir import FaultServer, Reply, ehr_body, seed_routes

    padding = {"resourceType": "Basic", "id": "pad", "text": {"div": "x" * 3_000_000}}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": padding}]}
    settings = make_settings(demo=True, fetch_max_bytes=1_000_000)
    with (
        ValidatingClient(create_app(settings)) as c,
        FaultServer({**seed_routes(), "Observation": Reply(body=bundle)}) as fake,
    ):
        r = c.post(SIGN, json=ehr_body(fake.base_url))
        assert r.status_code == 412, r.text
        assert "observations" in problem(r.json())
        assert "1000000 bytes" in problem(r.json())


# -- feedback: one request cannot hold the database's write lock for long ----------------------


def test_feedback_items_per_request_are_bounded(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    card = client.post(SIGN, json=seed_request).json()["cards"][0]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    }
    r = client.post(SIGN + "/feedback", json={"feedback": [item] * 101})
    assert r.status_code == 400, r.text
    assert client.post(SIGN + "/feedback", json={"feedback": [item] * 100}).status_code == 200


# -- settings: the longest accepted token lifetime is bounded -----------------------------------


def test_jwt_max_lifetime_is_bounded() -> None:
    from pydantic import ValidationError

    from cds_service.settings import Settings

    assert Settings(jwt_max_lifetime_seconds=86_400).jwt_max_lifetime_seconds == 86_400
    with pytest.raises(ValidationError):
        Settings(jwt_max_lifetime_seconds=10**9)  # a replay window (and jti cache) of 30 years


# -- the jti cache is not rebuilt on every call ----------------------------------------------


class _CountingDict(dict[tuple[str, str], float]):
    walks = 0

    def items(self) -> Any:
        _CountingDict.walks += 1
        return super().items()

    def __iter__(self) -> Any:
        _CountingDict.walks += 1
        return super().__iter__()


def test_jti_cache_is_not_walked_on_every_verification(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_jwks()))
    verifier = JwtVerifier({ISS: str(path)})
    verifier.verify("Bearer " + token(), [BASE + SIGN])
    seen = _CountingDict(verifier._seen)
    seen.update({(ISS, f"old-{i}"): 4e9 for i in range(10_000)})  # unexpired entries
    verifier._seen = seen
    for _ in range(3):
        verifier.verify("Bearer " + token(), [BASE + SIGN])
    assert _CountingDict.walks == 0
    assert len(verifier._seen) == 10_004
    tok = token()
    verifier.verify("Bearer " + tok, [BASE + SIGN])
    with pytest.raises(Unauthorized, match="replay"):
        verifier.verify("Bearer " + tok, [BASE + SIGN])


def test_prefix_matched_codes_are_not_echoed_as_markup_into_criteria(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    code = {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J18" + INJECTED}
    pid = _patient(req)
    req["prefetch"]["conditions"]["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c-inj",
                "subject": {"reference": f"Patient/{pid}"},
                "onsetDateTime": "2024-10-01",
                "code": {"coding": [code]},
            }
        }
    )
    req["prefetch"]["encounters"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Encounter",
                "id": "e-inj",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "period": {"start": "2024-11-05"},
                "reasonCode": [{"coding": [code]}],
            }
        }
    )
    text = _details(client, req)
    assert "5 bacterial infection episodes" in text  # both still count
    assert "<img" not in text
    assert "evil.example" not in text


def test_unknown_element_names_are_not_echoed_as_markup_into_cards(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    req = copy.deepcopy(seed_request)
    req["prefetch"]["labs"]["entry"].append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o-inj",
                "status": "final",
                "subject": {"reference": f"Patient/{_patient(req)}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
                "effectiveDateTime": "2025-01-01",
                "valueQuantity": {"value": 500, "unit": "mg/dL", INJECTED: 1},
            }
        }
    )
    text = _details(client, req)
    assert "Observation/o-inj (valueQuantity." in text  # the issue is still reported
    assert "<img" not in text
    assert "evil.example" not in text
