"""The determination contract ships with the project (docs/), equal to the fixed interface."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
SHARED = ROOT.parent / "shared" / "contract"  # the steering copy, where the checkout has one


def test_docs_schema_is_the_one_the_tests_validate_against() -> None:
    docs = (DOCS / "determination.schema.json").read_bytes()
    tested = ROOT / "tests" / "support" / "schemas" / "determination.schema.json"
    assert docs == tested.read_bytes()


@pytest.mark.parametrize("name", ["determination.md", "determination.schema.json"])
def test_docs_contract_equals_the_shared_contract(name: str) -> None:
    shared = SHARED / name
    if not shared.exists():
        pytest.skip("no shared/contract beside this checkout (CI, users): docs/ is the copy")
    assert (DOCS / name).read_bytes() == Path(shared).read_bytes(), f"docs/{name} drifted"
