"""Client JWTs for tests: the keys, the JWKS an EHR would publish, signed tokens and headers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"
SIGN = "/cds-services/ivig-order-sign"

EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP384R1())


def jwks() -> dict[str, Any]:
    ec_jwk = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
    rsa_jwk = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    return {
        "keys": [
            {**ec_jwk, "kid": "ec-1", "alg": "ES384", "use": "sig"},
            {**rsa_jwk, "kid": "rsa-1", "alg": "RS384", "use": "sig"},
        ]
    }


def token(
    path: str = SIGN,
    *,
    alg: str = "ES384",
    kid: str = "ec-1",
    key: Any = None,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISS,
        "aud": BASE + path,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "sub": "ehr-client",
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    if key is None:
        key = {"ES384": EC_KEY, "RS384": RSA_KEY, "RS256": RSA_KEY}.get(alg, EC_KEY)
    return jwt.encode(
        payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})}
    )


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}
