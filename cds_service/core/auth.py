"""CDS Hooks 2.0 client authentication: verify the EHR's signed JWT bearer token.

Spec (CDS Hooks 2.0 "Trusting CDS Clients"): every call (discovery, service, feedback) carries
``Authorization: Bearer <JWT>`` signed with the client's private key; header ``alg``, ``kid``,
``typ`` = JWT, optional ``jku``; claims ``iss``, ``aud`` (the exact endpoint URL called), ``exp``,
``iat``, ``jti``. Services SHOULD allowlist ``iss`` and ``jku``; never ``none``, never HMAC;
ES384 and RS384 recommended. All cryptography is PyJWT's.

What this module enforces:
- ``alg`` is ES384 or RS384 (anything else, including ``none`` and HS*, is rejected before any key
  is looked up); ``kid`` is required; ``typ``, when present, is ``JWT``.
- ``iss`` is in the configured allowlist; its key set is a JWKS URL (fetched with PyJWT's
  ``PyJWKClient``, cached) or a JWKS file loaded at start-up. A ``jku`` header must name that
  same URL, or the ``jku`` URL configured beside the issuer's file (``IssuerKeySet``: an offline
  deployment); without a configured URL a ``jku`` is refused. Keys are never fetched from a URL
  the token chooses.
- ``aud`` matches the URL called, ``exp`` and ``iat`` are present and checked with a small leeway,
  ``exp - iat`` is bounded, and a ``jti`` is accepted once per issuer within its lifetime.

Where a ``jti`` is remembered is the caller's choice (``first_use``): the service passes the
database (``Storage.first_use``, a unique insert that every replica shares, so a token replayed on
another replica is refused); without one, an in-process cache (one process only).
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from cds_service.core.errors import Unauthorized
from cds_service.core.settings import IssuerKeySet

# (issuer, jti, keep until epoch seconds) -> True the first time, False for a replay
FirstUse = Callable[[str, str, float], bool]

ALGORITHMS = ("ES384", "RS384")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


class KeySetError(RuntimeError):
    """A configured JWKS file is missing or malformed (a deployment error, raised at start-up)."""


def _check_url(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if not url.startswith(("https://", "http://")) or (
        url.startswith("http://") and host not in LOOPBACK
    ):
        raise KeySetError(f"JWKS URL {url}: must be https (http only on loopback)")
    return url


class _Keys:
    """The public keys of one trusted issuer, by ``kid``; ``url`` is the one ``jku`` accepted."""

    def __init__(self, spec: str | IssuerKeySet) -> None:
        source, jku = (spec.jwks, spec.jku) if isinstance(spec, IssuerKeySet) else (spec, None)
        self.url: str | None = _check_url(jku) if jku is not None else None
        self._client: jwt.PyJWKClient | None = None
        self._set: jwt.PyJWKSet | None = None
        if source.startswith(("https://", "http://")):
            self.url = self.url or source
            _check_url(source)
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300, timeout=5)
        else:
            try:
                self._set = jwt.PyJWKSet.from_dict(json.loads(Path(source).read_text("utf-8")))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise KeySetError(f"JWKS file {source}: {exc}") from exc

    def get(self, kid: str) -> Any:
        try:
            if self._client is not None:
                return self._client.get_signing_key(kid).key
            assert self._set is not None
            return self._set[kid].key
        except KeyError as exc:
            raise Unauthorized(f"no key with kid {kid!r} for this issuer") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthorized(f"issuer key set unavailable or has no kid {kid!r}") from exc


def _bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <JWT>` header."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a JWT bearer token is required (Authorization: Bearer <JWT>)")
    return token.strip()


class JwtVerifier:
    """Verifies CDS client tokens; thread-safe (the jti cache is guarded by a lock)."""

    def __init__(
        self,
        issuers: Mapping[str, str | IssuerKeySet],
        *,
        leeway: int = 30,
        max_lifetime: int = 3600,
        clock: Callable[[], float] = time.time,
        first_use: FirstUse | None = None,
    ) -> None:
        self._issuers = {iss: _Keys(spec) for iss, spec in issuers.items()}
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        # (until, key) of every cached jti, soonest first: expired entries are dropped from the
        # front instead of rebuilding the whole cache under the lock on every call
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()
        self._first_use = first_use or self._first_use_here

    def verify(self, authorization: str | None, audience: Sequence[str]) -> dict[str, Any]:
        """The verified claims of the bearer token, or Unauthorized saying what was wrong."""
        token = _bearer(authorization)
        alg, kid, iss, keys = self._trusted_header(token)
        now = self._clock()
        claims = self._decode(token, keys, alg, kid, iss, audience)
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if exp - iat > self._max_lifetime:
            raise Unauthorized(f"JWT lifetime exceeds {self._max_lifetime} s")
        if iat > now + self._leeway:
            raise Unauthorized("JWT iat is in the future")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("JWT jti must be a non-empty string")
        if not self._first_use(iss, jti, exp + self._leeway):
            raise Unauthorized("JWT jti has already been used (replay)")
        return claims

    def _trusted_header(self, token: str) -> tuple[str, str, str, _Keys]:
        """(alg, kid, iss, the issuer's keys) read before the signature is checked: an accepted
        algorithm, a kid, a trusted issuer and, when named, that issuer's own key set URL."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed JWT: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"JWT alg {alg!r} is not accepted; use ES384 or RS384")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("JWT header kid is required")
        if header.get("typ", "JWT") != "JWT":
            raise Unauthorized("JWT header typ must be 'JWT'")
        iss = unverified.get("iss")
        keys = self._issuers.get(iss) if isinstance(iss, str) else None
        if keys is None or not isinstance(iss, str):
            raise Unauthorized(f"JWT issuer {iss!r} is not trusted by this service")
        jku = header.get("jku")
        if jku is not None and jku != keys.url:
            raise Unauthorized(f"JWT jku {jku!r} is not the key set configured for this issuer")
        return str(alg), kid, iss, keys

    def _decode(
        self, token: str, keys: _Keys, alg: str, kid: str, iss: str, audience: Sequence[str]
    ) -> dict[str, Any]:
        """The claims once signature, audience, issuer, times and required claims are checked."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=keys.get(kid),
                algorithms=[alg],
                audience=list(audience),
                issuer=iss,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS, "verify_iat": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("JWT has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized(f"JWT aud must be the URL called: {audience[0]}") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthorized("JWT iat is in the future") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"JWT rejected: {exc}") from exc
        except (TypeError, ValueError) as exc:  # e.g. ES384 with the kid of an RSA key
            raise Unauthorized(f"JWT alg {alg} does not fit the key with kid {kid!r}") from exc
        return claims

    def _first_use_here(self, iss: str, jti: str, until: float) -> bool:
        """The in-process jti cache (used when no shared store is given)."""
        now = self._clock()
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                if self._seen.get(old, now) <= now:
                    self._seen.pop(old, None)
            key = (iss, jti)
            if key in self._seen:
                return False
            self._seen[key] = until
            heapq.heappush(self._expiry, (until, key))
        return True
