"""The EHR's JWT verifier (auth.py): a key that does not fit the token's algorithm is a 401, a
token's lifetime is bounded, and the jti replay cache is not walked on every verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cds_service.core.auth import JwtVerifier
from cds_service.core.errors import Unauthorized
from tests.support.jwt import BASE, ISS, SIGN, jwks, token


@pytest.mark.parametrize(("alg", "kid"), [("ES384", "rsa-1"), ("RS384", "ec-1")])
def test_alg_that_does_not_fit_the_kid_key_is_401_not_500(
    tmp_path: Path, alg: str, kid: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks()))
    verifier = JwtVerifier({ISS: str(path)})
    with pytest.raises(Unauthorized):
        verifier.verify("Bearer " + token(alg=alg, kid=kid), [BASE + SIGN])


def test_jwt_max_lifetime_is_bounded() -> None:
    from pydantic import ValidationError

    from cds_service.core.settings import Settings

    assert Settings(jwt_max_lifetime_seconds=86_400).jwt_max_lifetime_seconds == 86_400
    with pytest.raises(ValidationError):
        Settings(jwt_max_lifetime_seconds=10**9)  # a replay window (and jti cache) of 30 years


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
    path.write_text(json.dumps(jwks()))
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
