"""Shared fixtures: one app per test session (knowledge and templates load once).

Every response the test suite gets from ``/cds-services`` is validated against the CDS Hooks 2.0
JSON Schemas (and every coverage-information extension in ``systemActions`` against the Da Vinci
CRD schema and invariants crd-ci-q1..q9) by :class:`ValidatingClient`: ``tests/schemas/``,
sources named in each schema and in ``tests/cds_schemas.py``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from cds_service.app import create_app
from cds_service.core.settings import Settings
from tests.support import cds_schemas
from tools.local_fhir import FhirServer, ensure_installed

# Tests that build an app from plain Settings() get client authentication off and a throw-away
# database (tests/api/test_auth.py removes the first for its module). Nothing else changes: demo
# stays off, so e.g. the FHIR server allowlist behaves as in production. Set before any Settings.
os.environ.setdefault("IVIG_CDS_JWT_REQUIRED", "false")
os.environ.setdefault(
    "IVIG_CDS_DATABASE_PATH", str(Path(tempfile.mkdtemp(prefix="ivig-cds-test-")) / "t.db")
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
DETERMINATION_KEY = "ivig-cds.determination"

_SERVICE_CALL = re.compile(r"^/cds-services/[^/]+$")


def check_cds_response(method: str, path: str, response: httpx.Response) -> None:
    """Schema-validate a successful discovery or service response; anything else is left alone."""
    if response.status_code != 200:
        return
    if method == "GET" and path.rstrip("/") == "/cds-services":
        cds_schemas.validate_discovery(response.json())
    elif method == "POST" and _SERVICE_CALL.match(path):
        cds_schemas.validate_response_with_crd(response.json())


class ValidatingClient(TestClient):
    """A TestClient that schema-validates every CDS Hooks response it receives."""

    validated = 0  # class-wide count, so a test can prove the hook is live

    def request(self, method: str, url: httpx._types.URLTypes, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
        response = super().request(method, url, *args, **kw)
        path = httpx.URL(str(url)).path
        check_cds_response(method.upper(), path, response)
        if response.status_code == 200 and path.startswith("/cds-services"):
            ValidatingClient.validated += 1
        return response


def open_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for tests that do not test authentication: JWT off, a private database."""
    values: dict[str, Any] = {"jwt_required": False, "database_path": tmp / "ivig-cds.db"}
    values.update(overrides)
    return Settings(**values)


def make_client(app: FastAPI) -> ValidatingClient:
    return ValidatingClient(app)


def make_settings(**overrides: Any) -> Settings:
    """Settings for the record-access tests' own apps: JWT off, the environment's private
    database; everything else (demo, allowlist) as given."""
    return Settings(**{"jwt_required": False, **overrides})


# -- databases: SQLite always; PostgreSQL where one is reachable ---------------------------------
# .ci/run starts one and sets IVIG_CDS_TEST_POSTGRES_REQUIRED=1, so there an unreachable server
# fails the PostgreSQL tests instead of skipping them.
POSTGRES_URL = os.environ.get(
    "IVIG_CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"
)
POSTGRES_REQUIRED = os.environ.get("IVIG_CDS_TEST_POSTGRES_REQUIRED", "") == "1"
DATABASES = ["sqlite", "postgresql"]
_created: list[str] = []


def _postgres_admin() -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        message = f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"
        if POSTGRES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return engine


def database_url(kind: str, tmp: Path) -> str:
    """A new, empty database of this kind: a SQLite file in `tmp`, or a PostgreSQL database
    created for the caller (dropped at the end of the session)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'ivig-cds.db'}"
    import sqlalchemy as sa

    admin = _postgres_admin()
    name = f"ivig_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    _created.append(name)
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if not _created:
        return
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in _created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="module", params=DATABASES)
def db_kind(request: pytest.FixtureRequest) -> str:
    """Run a module once per database kind (module scope: one app per kind)."""
    kind: str = request.param
    return kind


@pytest.fixture
def db_url(db_kind: str, tmp_path: Path) -> str:
    """A fresh empty database of the module's kind for one test."""
    return database_url(db_kind, tmp_path)


@pytest.fixture(scope="session")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValidatingClient]:
    """A validating TestClient over the real app (packaged knowledge, templates; JWT off)."""
    with ValidatingClient(create_app(open_settings(tmp_path_factory.mktemp("db")))) as c:
        yield c


def problem(body: Any) -> str:
    """The message of an error answer (an OperationOutcome: its issues' diagnostics)."""
    assert body.get("resourceType") == "OperationOutcome", body
    assert "error" not in body, "an OperationOutcome carries no other members"
    return "; ".join(str(i.get("diagnostics", "")) for i in body.get("issue", []))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def seed_request() -> dict[str, Any]:
    """The founding case as a CDS Hooks order-sign request (fresh copy per test)."""
    data: dict[str, Any] = load_json(FIXTURES / "seed" / "order-sign-request.json")
    return data


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """A real FHIR R4 server (sekmet-fhir, pinned, in its own venv `.venv-fhir`) with a fresh
    data directory for this test session; stopped by PID at the end."""
    exe = ensure_installed(Path(os.environ.get("IVIG_CDS_FHIR_VENV", ROOT / ".venv-fhir")))
    with FhirServer(exe, validation="strict", tmp_root=tmp_path_factory.mktemp("sekmet")) as srv:
        yield srv
