"""CDS Hooks 2.0 client authentication: the EHR's JWT bearer token, verified with PyJWT."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from cds_service.app import create_app
from cds_service.core.settings import Settings
from tests.conftest import ValidatingClient, database_url, problem
from tests.support.jwt import (
    BASE,
    ISS,
    OTHER_EC_KEY,
    SIGN,
    bearer,
    jwks,
    token,
)


@pytest.fixture(scope="module", autouse=True)
def _secure_defaults() -> Iterator[None]:
    """conftest switches JWT off for other tests; this module tests the real default."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("IVIG_CDS_JWT_REQUIRED", raising=False)
        yield


@pytest.fixture(scope="module")
def jwks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwks") / "ehr-jwks.json"
    path.write_text(json.dumps(jwks()))
    return path


@pytest.fixture(scope="module")
def secured(
    jwks_file: Path, db_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ValidatingClient]:
    """The secured app on SQLite and on PostgreSQL: the jti replay store is the database."""
    settings = Settings(
        demo=False,
        public_base_url=BASE,
        jwt_issuers={ISS: str(jwks_file)},
        database_url=database_url(db_kind, tmp_path_factory.mktemp("db")),
    )
    assert settings.auth_enabled
    with ValidatingClient(create_app(settings)) as c:
        yield c


def test_valid_es384_token_is_accepted(
    secured: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    assert secured.get("/cds-services", headers=bearer(token("/cds-services"))).status_code == 200
    r = secured.post(SIGN, json=seed_request, headers=bearer(token()))
    assert r.status_code == 200, r.text


def test_valid_rs384_token_is_accepted(
    secured: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    r = secured.post(SIGN, json=seed_request, headers=bearer(token(alg="RS384", kid="rsa-1")))
    assert r.status_code == 200, r.text


def test_feedback_accepts_its_own_url_or_the_service_url_as_aud(
    secured: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    card = secured.post(SIGN, json=seed_request, headers=bearer(token())).json()["cards"][0]
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
            }
        ]
    }
    for aud_path in (SIGN + "/feedback", SIGN):
        r = secured.post(SIGN + "/feedback", json=body, headers=bearer(token(aud=BASE + aud_path)))
        assert r.status_code == 200, r.text


def _rejected(secured: ValidatingClient, body: dict[str, Any], headers: dict[str, str]) -> str:
    r = secured.post(SIGN, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    message: str = problem(r.json())
    return message


def test_missing_token_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    assert "bearer token is required" in _rejected(secured, seed_request, {})
    assert secured.get("/cds-services").status_code == 401


@pytest.mark.parametrize("alg", ["RS256", "HS384", "HS256", "none"])
def test_wrong_alg_is_401(
    secured: ValidatingClient, seed_request: dict[str, Any], alg: str
) -> None:
    if alg.startswith("HS"):
        tok = token(alg=alg, key="a-shared-secret-that-is-long-enough-for-hmac-384-bits!!")
    elif alg == "none":
        now = int(time.time())
        claims = {"iss": ISS, "aud": BASE + SIGN, "iat": now, "exp": now + 60, "jti": "n-1"}
        tok = jwt.encode(claims, None, algorithm="none", headers={"kid": "ec-1"})
    else:
        tok = token(alg=alg, kid="rsa-1")
    assert "alg" in _rejected(secured, seed_request, bearer(tok))


def test_wrong_aud_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    for aud in (BASE + "/cds-services", "https://other.example.org" + SIGN):
        assert "aud" in _rejected(secured, seed_request, bearer(token(aud=aud)))


def test_expired_token_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    old = int(time.time()) - 3600
    assert "expired" in _rejected(secured, seed_request, bearer(token(iat=old, exp=old + 300)))


def test_token_from_the_future_is_401(
    secured: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    soon = int(time.time()) + 600
    _rejected(secured, seed_request, bearer(token(iat=soon, exp=soon + 300)))


def test_overlong_lifetime_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    now = int(time.time())
    assert "lifetime" in _rejected(secured, seed_request, bearer(token(exp=now + 86400)))


def test_unknown_issuer_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    tok = token(iss="https://attacker.example.org")
    assert "issuer" in _rejected(secured, seed_request, bearer(tok))


def test_replayed_jti_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    tok = token()
    assert secured.post(SIGN, json=seed_request, headers=bearer(tok)).status_code == 200
    assert "replay" in _rejected(secured, seed_request, bearer(tok))


def test_a_token_replayed_on_another_replica_is_401(
    jwks_file: Path, db_url: str, seed_request: dict[str, Any]
) -> None:
    """Two app instances on one database (two replicas): the jti store is shared."""
    settings = Settings(
        demo=False, public_base_url=BASE, jwt_issuers={ISS: str(jwks_file)}, database_url=db_url
    )
    tok = token()
    with (
        ValidatingClient(create_app(settings)) as one,
        ValidatingClient(create_app(settings)) as two,
    ):
        assert one.post(SIGN, json=seed_request, headers=bearer(tok)).status_code == 200
        assert "replay" in _rejected(two, seed_request, bearer(tok))
        assert "replay" in _rejected(one, seed_request, bearer(tok))


@pytest.mark.parametrize("missing", ["jti", "exp", "iat", "aud"])
def test_missing_claim_is_401(
    secured: ValidatingClient, seed_request: dict[str, Any], missing: str
) -> None:
    _rejected(secured, seed_request, bearer(token(**{missing: None})))


def test_signature_by_another_key_is_401(
    secured: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    _rejected(secured, seed_request, bearer(token(key=OTHER_EC_KEY)))


def test_unknown_kid_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    assert "kid" in _rejected(secured, seed_request, bearer(token(kid="nope")))


def test_jku_outside_the_allowlist_is_401(
    secured: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    tok = token(headers={"jku": "https://attacker.example.org/jwks.json"})
    assert "jku" in _rejected(secured, seed_request, bearer(tok))


def test_garbage_token_is_401(secured: ValidatingClient, seed_request: dict[str, Any]) -> None:
    _rejected(secured, seed_request, bearer("not.a.jwt"))


def test_reports_need_no_token_but_an_unguessable_id(secured: ValidatingClient) -> None:
    assert secured.get("/reports/guess").status_code == 404


def test_auth_is_on_by_default_and_off_only_in_demo(tmp_path: Path) -> None:
    assert Settings(demo=False).auth_enabled
    assert not Settings(demo=True).auth_enabled
    assert Settings(demo=True, jwt_required=True).auth_enabled
    locked = create_app(Settings(demo=False, database_path=tmp_path / "d.db"))
    with ValidatingClient(locked) as c:
        assert c.get("/cds-services").status_code == 401


def test_jwks_url_must_be_https_off_loopback(jwks_file: Path) -> None:
    from cds_service.core.auth import JwtVerifier, KeySetError

    with pytest.raises(KeySetError, match="https"):
        JwtVerifier({ISS: "http://keys.example.org/jwks.json"})
    with pytest.raises(KeySetError):
        JwtVerifier({ISS: str(jwks_file) + ".missing"})
    JwtVerifier({ISS: "https://keys.example.org/jwks.json"})  # fetched lazily, on first use


class _JwksHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(jwks()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_jwks_by_url(tmp_path: Path, seed_request: dict[str, Any]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        settings = Settings(
            demo=False,
            public_base_url=BASE,
            jwt_issuers={ISS: url},
            database_path=tmp_path / "u.db",
        )
        with ValidatingClient(create_app(settings)) as c:
            ok = token(headers={"jku": url})
            assert c.post(SIGN, json=seed_request, headers=bearer(ok)).status_code == 200
            assert (
                c.post(SIGN, json=seed_request, headers=bearer(token(kid="x"))).status_code == 401
            )
    finally:
        server.shutdown()
        server.server_close()


# -- a JWKS file that stands for the issuer's jku URL (an offline deployment) --------------------

JKU = "https://ehr.example.org/.well-known/jwks.json"


@pytest.fixture(scope="module")
def offline(
    jwks_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ValidatingClient]:
    """The issuer's keys from a file, configured as the key set its tokens' `jku` names; set
    from the environment as a deployment would (nothing is fetched: the URL does not exist)."""
    issuers = {
        ISS: {"jwks": str(jwks_file), "jku": JKU},
        "https://other.example.org": str(jwks_file),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IVIG_CDS_JWT_ISSUERS", json.dumps(issuers))
        settings = Settings(
            demo=False, public_base_url=BASE, database_path=tmp_path_factory.mktemp("db") / "o.db"
        )
    with ValidatingClient(create_app(settings)) as c:
        yield c


def test_a_file_configured_issuer_accepts_tokens_naming_its_jku(
    offline: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    for headers in ({"jku": JKU}, {}):
        r = offline.post(SIGN, json=seed_request, headers=bearer(token(headers=headers)))
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("iss", "jku"),
    [
        (ISS, "https://attacker.example.org/jwks.json"),
        (ISS, JKU + "?x=1"),
        ("https://other.example.org", JKU),  # another issuer's jku; this one's file names none
    ],
)
def test_a_file_configured_issuer_refuses_any_other_jku(
    offline: ValidatingClient, seed_request: dict[str, Any], iss: str, jku: str
) -> None:
    r = offline.post(SIGN, json=seed_request, headers=bearer(token(iss=iss, headers={"jku": jku})))
    assert r.status_code == 401
    assert "jku" in problem(r.json())


def test_an_issuer_key_set_with_unknown_members_stops_start_up(jwks_file: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="jwks_url"):
        Settings(jwt_issuers={ISS: {"jwks": str(jwks_file), "jwks_url": JKU}})
    with pytest.raises(ValidationError):
        Settings(jwt_issuers={ISS: {"jku": JKU}})  # where the keys are is required


def test_a_configured_jku_must_be_https(jwks_file: Path) -> None:
    from cds_service.core.auth import JwtVerifier, KeySetError
    from cds_service.core.settings import IssuerKeySet

    with pytest.raises(KeySetError, match="https"):
        JwtVerifier({ISS: IssuerKeySet(jwks=str(jwks_file), jku="http://ehr.example.org/k")})
