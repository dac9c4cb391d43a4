"""Discovery document and the console script."""

from __future__ import annotations

import json

from click.testing import CliRunner
from fastapi.testclient import TestClient

from cds_service.cli import main
from tests.conftest import FIXTURES, load_json


def test_discovery_lists_order_sign_with_prefetch(client: TestClient) -> None:
    services = client.get("/cds-services").json()["services"]
    sign = next(s for s in services if s["hook"] == "order-sign")
    assert sign["id"] == "ivig-order-sign"
    templates = sign["prefetch"]
    for rtype in (
        "Patient",
        "Condition",
        "Observation",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        "Immunization",
        "Encounter",
    ):
        assert any(t.startswith(rtype) for t in templates.values()), rtype
    assert all("{{context.patientId}}" in t for t in templates.values())
    assert "http://loinc.org|2465-3" in templates["observations"]


SEED_FILE = FIXTURES / "seed" / "order-sign-request.json"


def test_cli_evaluate_json_prints_the_determination() -> None:
    result = CliRunner().invoke(main, ["evaluate", "--json", str(SEED_FILE)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == load_json(FIXTURES / "seed" / "expected-determination.json")


def test_cli_evaluate_prints_a_readable_summary_by_default() -> None:
    result = CliRunner().invoke(main, ["evaluate", str(SEED_FILE)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("Privigen: Insufficient documentation (Continuation request")
    # criteria by name, statuses in the report's vocabulary, not ids or contract codes
    assert "Pre-treatment IgG" in out
    assert "baseline-igg" not in out
    assert "Insufficient documentation" in out
    assert "insufficient-documentation" not in out
    assert "weight not documented" in out
    assert "not documented kg" not in out
    cards = CliRunner().invoke(main, ["evaluate", "--cards", str(SEED_FILE)]).output
    for card in json.loads(cards)["cards"]:  # every card's summary, with its indicator
        assert f"[{card['indicator']}] {card['summary']}" in out
    assert not out.lstrip().startswith("{")


def test_cli_evaluate_reads_standard_input() -> None:
    body = SEED_FILE.read_bytes()
    result = CliRunner().invoke(main, ["evaluate", "--json", "-"], input=body)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outcome"] == "insufficient-documentation"
    cards = CliRunner().invoke(main, ["evaluate", "--cards", "-"], input=body)
    assert cards.exit_code == 0, cards.output
    assert json.loads(cards.output)["cards"][0]["summary"]


def test_cli_evaluate_reports_bad_input_with_exit_2(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(main, ["evaluate", str(bad)])
    assert result.exit_code == 2
    assert "error 400" in result.output


def test_serve_refuses_a_public_bind_in_demo_mode() -> None:
    import pytest

    from cds_service.core.settings import get_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("IVIG_CDS_DEMO", "true")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "8999"])
    finally:
        mp.undo()
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "loopback only" in result.output
