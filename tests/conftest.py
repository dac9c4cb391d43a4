"""Shared fixtures: one app per test session (knowledge and templates load once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
DETERMINATION_KEY = "ivig-cds.determination"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """A TestClient over the real app with the packaged knowledge and card templates."""
    with TestClient(create_app(Settings())) as c:
        yield c


@pytest.fixture
def seed_request() -> dict[str, Any]:
    """The founding case as a CDS Hooks order-sign request (fresh copy per test)."""
    data: dict[str, Any] = load_json(FIXTURES / "seed" / "order-sign-request.json")
    return data
