"""CDS Hooks 2.0 feedback: stored durably before the 200, survives a restart, summarised."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.storage import Storage
from tests.conftest import ValidatingClient, database_url, open_settings, problem
from tests.support import cds_schemas

SIGN = "/cds-services/ivig-order-sign"
FEEDBACK = SIGN + "/feedback"
WHEN = "2026-11-25T10:00:00Z"


@pytest.fixture(scope="module")
def client(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This module runs on SQLite and on PostgreSQL (conftest.db_kind)."""
    tmp = tmp_path_factory.mktemp("db")
    url = database_url(db_kind, tmp)
    with ValidatingClient(create_app(open_settings(tmp, database_url=url))) as c:
        yield c


def _cards(client: TestClient, seed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    r = client.post(SIGN, json=seed)
    assert r.status_code == 200, r.text
    return {c["extension"]["ivig-cds.card-type"]: c for c in r.json()["cards"]}


def _overridden(card: dict[str, Any], code: str = "outside-records") -> dict[str, Any]:
    reason = next(r for r in card["overrideReasons"] if r["code"] == code)
    return {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": reason, "userComment": "IgG 180 mg/dL in 2019, scanned"},
        "outcomeTimestamp": WHEN,
    }


def _accepted(card: dict[str, Any], n: int = 1) -> dict[str, Any]:
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": s["uuid"]} for s in card["suggestions"][:n]],
        "outcomeTimestamp": WHEN,
    }


def _send(client: TestClient, *items: dict[str, Any], url: str = FEEDBACK) -> Any:
    body = {"feedback": list(items)}
    cds_schemas.validate_feedback(body)  # what we send is what a conformant EHR sends
    return client.post(url, json=body)


def test_feedback_is_stored_and_shown_in_the_report(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    cards = _cards(client, seed_request)
    r = _send(
        client, _overridden(cards["baseline-igg"]), _accepted(cards["secondary-causes-excluded"], 2)
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 2}
    report = next(link["url"] for link in cards["summary"]["links"] if "/reports/" in link["url"])
    html = client.get(report.split("8080", 1)[1]).text
    assert "Documented in outside records; will attach" in html
    assert "IgG 180 mg/dL in 2019, scanned" in html


def test_unknown_card_is_404(client: TestClient) -> None:
    item = {"card": "no-such-card", "outcome": "overridden", "outcomeTimestamp": WHEN}
    assert _send(client, item).status_code == 404


def test_card_of_another_service_is_404(client: TestClient, seed_request: dict[str, Any]) -> None:
    cards = _cards(client, seed_request)
    r = _send(
        client,
        _overridden(cards["dose"], "weight-elsewhere"),
        url="/cds-services/ivig-order-select/feedback",
    )
    assert r.status_code == 404


def test_feedback_for_unknown_service_is_404(client: TestClient) -> None:
    item = {"card": "x", "outcome": "overridden", "outcomeTimestamp": WHEN}
    assert _send(client, item, url="/cds-services/nope/feedback").status_code == 404


def _one(**item: str) -> bytes:
    return json.dumps({"feedback": [item]}).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "(body)"),
        (b"[]", "(body)"),
        (b"{}", "feedback"),
        (b'{"feedback": []}', "feedback"),
        (_one(outcome="overridden", outcomeTimestamp=WHEN), "feedback.0.card"),
        (_one(card="c", outcome="ignored", outcomeTimestamp=WHEN), "feedback.0.outcome"),
        (_one(card="c", outcome="overridden", outcomeTimestamp="yesterday"), "feedback.0.outc"),
        (_one(card="c", outcome="overridden", outcomeTimestamp="2026-01-01"), "feedback.0.outc"),
        (_one(card="c", outcome="accepted", outcomeTimestamp=WHEN), "feedback.0.acceptedSugg"),
    ],
)
def test_malformed_feedback_is_400(client: TestClient, body: bytes, field: str) -> None:
    r = client.post(FEEDBACK, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert problem(r.json()).startswith(field)


def test_accepting_a_suggestion_the_card_did_not_offer_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    cards = _cards(client, seed_request)
    item = _accepted(cards["dose"])
    item["acceptedSuggestions"] = [
        {"id": cards["secondary-causes-excluded"]["suggestions"][0]["uuid"]}
    ]
    r = _send(client, item)
    assert r.status_code == 400
    assert "acceptedSuggestions" in problem(r.json())


def test_a_rejected_batch_stores_nothing(client: TestClient, seed_request: dict[str, Any]) -> None:
    cards = _cards(client, seed_request)
    good = _overridden(cards["dose"], "weight-elsewhere")
    bad = {"card": "no-such-card", "outcome": "overridden", "outcomeTimestamp": WHEN}
    assert _send(client, good, bad).status_code == 404
    storage: Storage = client.app.state.storage  # type: ignore[attr-defined]
    assert storage.feedback_for([cards["dose"]["uuid"]]) == []


def test_feedback_survives_a_restart_and_is_summarised(
    tmp_path: Path, db_url: str, seed_request: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = open_settings(tmp_path, database_url=db_url)
    with ValidatingClient(create_app(settings)) as first:
        cards = _cards(first, seed_request)
        assert _send(first, _overridden(cards["baseline-igg"])).status_code == 200
        assert _send(first, _accepted(cards["secondary-causes-excluded"])).status_code == 200
        assert _send(first, _overridden(cards["secondary-causes-excluded"])).status_code == 200
        report = next(
            link["url"] for link in cards["summary"]["links"] if "/reports/" in link["url"]
        ).split("8080", 1)[1]
    # a new process on the same database file: the report and the feedback are still there,
    # and feedback can still be given on the cards of the earlier response
    with ValidatingClient(create_app(open_settings(tmp_path, database_url=db_url))) as second:
        html = second.get(report).text
        assert "IgG 180 mg/dL in 2019, scanned" in html
        assert _send(second, _overridden(cards["dose"], "weight-elsewhere")).status_code == 200

    monkeypatch.setenv("IVIG_CDS_DATABASE_URL", db_url)
    from cds_service.core.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["feedback", "--since", "2000-01-01"])
        as_json = CliRunner().invoke(main, ["feedback", "--since", "2000-01-01", "--json"])
        later = CliRunner().invoke(main, ["feedback", "--since", "2999-01-01", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "secondary-causes-excluded" in result.output
    rates = {row["cardType"]: row for row in json.loads(as_json.output)}
    assert rates["secondary-causes-excluded"] == {
        "cardType": "secondary-causes-excluded",
        "feedback": 2,
        "overridden": 1,
        "accepted": 1,
        "overrideRate": 0.5,
    }
    assert rates["baseline-igg"]["overrideRate"] == 1.0
    assert rates["dose"]["overridden"] == 1
    assert json.loads(later.output) == []


def test_feedback_cli_rejects_a_bad_date() -> None:
    result = CliRunner().invoke(main, ["feedback", "--since", "last week"])
    assert result.exit_code != 0


def test_sqlite_durability_per_write_and_checkpoints_off_the_request_path(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    """Evaluation records commit with synchronous=NORMAL (WAL: they survive a crash of the
    process), feedback with FULL (it survives a power loss); no request's commit checkpoints
    the log: a background thread does, shortly after writes."""
    if not storage_is_sqlite(client):
        pytest.skip("SQLite's own durability settings (PostgreSQL keeps its own)")
    storage: Storage = client.app.state.storage  # type: ignore[attr-defined]
    levels: list[str] = []
    original = storage._durability

    def spy(conn: Any, level: str) -> None:
        levels.append(level)
        original(conn, level)

    storage._durability = spy  # type: ignore[method-assign]
    cards = _cards(client, seed_request)
    assert levels == ["NORMAL"]
    assert _send(client, _overridden(cards["dose"], "weight-elsewhere")).status_code == 200
    assert levels == ["NORMAL", "FULL"]
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    deadline = time.monotonic() + 5
    while storage.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert storage.checkpoints >= 1


def storage_is_sqlite(client: TestClient) -> bool:
    storage: Storage = client.app.state.storage  # type: ignore[attr-defined]
    return storage.is_sqlite


def test_feedback_cli_refuses_a_missing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from another directory, `feedback` must not create an empty database there."""
    missing = tmp_path / "elsewhere" / "ivig-cds.db"
    monkeypatch.setenv("IVIG_CDS_DATABASE_PATH", str(missing))
    monkeypatch.delenv("IVIG_CDS_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    from cds_service.core.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["feedback", "--since", "2000-01-01"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"ivig-cds: no database at {missing} (set IVIG_CDS_DATABASE_PATH or DATABASE_URL)"
    ]
    assert not missing.exists()
