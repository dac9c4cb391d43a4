"""Storage on SQLite and PostgreSQL: migrations, concurrent start-up, the shared jti store,
retention (purge, "expired" reports), reports and feedback seen by every replica."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.core.settings import get_settings
from cds_service.storage import (
    CardRecord,
    Evaluation,
    Storage,
    cards,
    evaluations,
    jti_seen,
    metadata,
    migrate,
)
from tests.conftest import ROOT, ValidatingClient, open_settings

SIGN = "/cds-services/ivig-order-sign"


def _report_path(response: dict[str, Any]) -> str:
    url = next(link["url"] for link in response["cards"][0]["links"] if "/reports/" in link["url"])
    return "/reports/" + url.rsplit("/reports/", 1)[1]


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_start_up_migrates_an_empty_database_to_head(db_url: str) -> None:
    store = Storage(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head() == "0003"
    finally:
        store.close()
    assert _tables(db_url) >= {
        "alembic_version",
        "evaluations",
        "cards",
        "feedback",
        "jti_seen",
        "expired_reports",
    }


def test_a_database_made_by_create_all_is_stamped_and_upgraded(db_url: str) -> None:
    """The schema before migrations: evaluations, cards and feedback, no version table."""
    engine = sa.create_engine(db_url)
    old = [metadata.tables[n] for n in ("evaluations", "cards", "feedback")]
    metadata.create_all(engine, tables=old)
    row = {c.name: "x" for c in evaluations.columns} | {"id": "kept", "assertion_id": "a1"}
    with engine.begin() as conn:
        conn.execute(evaluations.insert(), row)
    engine.dispose()
    store = Storage(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(evaluations.c.id)).scalars().all() == ["kept"]
        assert store.first_use("iss", "jti-1", time.time() + 60)  # the new table is there
    finally:
        store.close()


def test_without_migrate_an_old_schema_stops_start_up_in_one_line(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(migrate.SchemaOutOfDate, match="ivig-cds db upgrade"):
        Storage(db_url, migrate_schema=False)
    monkeypatch.setenv("IVIG_CDS_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "database schema at revision 0003"
    Storage(db_url, migrate_schema=False).close()  # now at head: starts without migrating


def test_concurrent_upgrades_on_an_empty_database_all_succeed(db_url: str) -> None:
    """Three processes migrating one empty database at the same moment (replicas starting):
    one migrates under the lock, the others wait and find the schema at head."""
    env = {**os.environ, "IVIG_CDS_DATABASE_URL": db_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "database schema at revision 0003"


def test_jti_store_is_shared_and_forgets_expired_tokens(db_url: str) -> None:
    one, two = Storage(db_url), Storage(db_url)  # two replicas on one database
    try:
        later = time.time() + 300
        assert one.first_use("https://ehr.example.org", "t-1", later)
        assert not two.first_use("https://ehr.example.org", "t-1", later)  # replayed elsewhere
        assert not one.first_use("https://ehr.example.org", "t-1", later)
        assert two.first_use("https://other.example.org", "t-1", later)  # per issuer
        assert one.first_use("https://ehr.example.org", "t-past", time.time() - 1)
        two._next_sweep = 0.0  # due now
        assert two.first_use("https://ehr.example.org", "t-2", later)
        with one.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(jti_seen)).scalar_one()
        assert count == 3  # t-1 twice (two issuers) and t-2; the expired t-past swept
    finally:
        one.close()
        two.close()


def test_a_report_and_feedback_are_seen_by_another_replica(
    tmp_path: Path, db_url: str, seed_request: dict[str, Any]
) -> None:
    settings = open_settings(tmp_path, database_url=db_url)
    with (
        ValidatingClient(create_app(settings)) as a,
        ValidatingClient(create_app(settings)) as b,
    ):
        response = a.post(SIGN, json=seed_request).json()
        card = response["cards"][1]
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-25T10:00:00Z",
        }
        assert b.post(SIGN + "/feedback", json={"feedback": [item]}).status_code == 200
        assert a.post(SIGN + "/feedback", json={"feedback": [item]}).status_code == 200
        page = b.get(_report_path(response))
        assert page.status_code == 200
        assert card["summary"].split(":")[0][:20] in page.text
        assert len(a.app.state.storage.feedback_for([card["uuid"]])) == 2  # type: ignore[attr-defined]


def test_retention_purges_old_evaluations_and_their_reports_say_expired(
    tmp_path: Path, db_url: str, seed_request: dict[str, Any]
) -> None:
    with ValidatingClient(create_app(open_settings(tmp_path, database_url=db_url))) as c:
        store: Storage = c.app.state.storage  # type: ignore[attr-defined]
        response = c.post(SIGN, json=seed_request).json()
        card = response["cards"][0]
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-25T10:00:00Z",
        }
        assert c.post(SIGN + "/feedback", json={"feedback": [item]}).status_code == 200
        report = _report_path(response)
        assert store.purge(30) == 0  # a minute old: kept
        assert c.get(report).status_code == 200
        in_31_days = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
        assert store.purge(30, now=in_31_days) == 1
        assert store.purge(30, now=in_31_days) == 0
        gone = c.get(report)
        assert gone.status_code == 410
        assert "expired" in gone.text
        assert c.get("/reports/never-existed").status_code == 404
        assert store.feedback_for([card["uuid"]]) == []
        again = c.post(SIGN + "/feedback", json={"feedback": [item]})
        assert again.status_code == 404  # its card went with the evaluation


def test_the_service_purges_periodically_when_retention_is_set(
    tmp_path: Path, db_url: str, seed_request: dict[str, Any]
) -> None:
    settings = open_settings(
        tmp_path,
        database_url=db_url,
        retention_days=1e-6,
        purge_interval_s=1,  # ~0.1 s
    )
    with ValidatingClient(create_app(settings)) as c:
        report = _report_path(c.post(SIGN, json=seed_request).json())
        deadline = time.monotonic() + 10
        while c.get(report).status_code != 410 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get(report).status_code == 410


def test_purge_command(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Storage(db_url).close()
    monkeypatch.setenv("IVIG_CDS_DATABASE_URL", db_url)
    monkeypatch.delenv("IVIG_CDS_RETENTION_DAYS", raising=False)
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(main, ["db", "purge", "--days", "30"])
        unset = CliRunner().invoke(main, ["db", "purge"])
        monkeypatch.setenv("IVIG_CDS_RETENTION_DAYS", "90")
        get_settings.cache_clear()
        from_setting = CliRunner().invoke(main, ["db", "purge"])
    finally:
        get_settings.cache_clear()
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == "purged 0 evaluations older than 30 days"
    assert unset.exit_code == 2
    assert "IVIG_CDS_RETENTION_DAYS" in unset.output
    assert from_setting.output.strip() == "purged 0 evaluations older than 90 days"


def _evaluation(eid: str, card_uuids: tuple[str, ...]) -> Evaluation:
    det = {"policy": "pol", "outcome": "meets-criteria", "criteria": [{"id": "c", "met": True}]}
    return Evaluation(
        id=eid,
        service_id="ivig-order-sign",
        hook="order-sign",
        hook_instance=f"h-{eid}",
        patient_id="p",
        order_ref="MedicationRequest/x",
        assertion_id=f"a-{eid}",
        policy="pol",
        outcome="meets-criteria",
        determination=det,
        response={"cards": [{"uuid": u, "summary": "s"} for u in card_uuids]},
        cards=tuple(CardRecord(u, "dose", f"summary {u}", (f"{u}-s1",)) for u in card_uuids),
        report_facts={"thresholdMgDl": 500},
    )


def test_a_failed_record_writes_nothing_and_the_next_one_is_stored(db_url: str) -> None:
    """One transaction per evaluation on either database (SQLite writes through its own
    connection): a failure leaves no half-written evaluation behind, comes out as SQLAlchemy's
    error, and does not break the evaluations recorded after it."""
    store = Storage(db_url)
    try:
        store.record(_evaluation("one", ("c1", "c2")))
        with pytest.raises(sa.exc.IntegrityError):
            store.record(_evaluation("two", ("c3", "c1")))  # c1 is already a card of "one"
        assert store.evaluation("two") is None
        store.record(_evaluation("three", ("c3",)))
        got = store.evaluation("three")
        assert got is not None
        assert got.created_at
        assert got == replace(_evaluation("three", ("c3",)), created_at=got.created_at)
        with store.engine.connect() as conn:
            ids = conn.execute(sa.select(cards.c.uuid).order_by(cards.c.uuid)).scalars().all()
        assert ids == ["c1", "c2", "c3"]
    finally:
        store.close()


def test_evaluations_recorded_from_many_threads_are_all_stored(db_url: str) -> None:
    """The service records from its evaluation threads at once (SQLite: one writer connection
    per process, taken in turn)."""
    store = Storage(db_url)

    def write(worker: int) -> None:
        for i in range(10):
            store.record(_evaluation(f"{worker}-{i}", (f"{worker}-{i}-a", f"{worker}-{i}-b")))

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        for worker in range(8):
            for i in range(10):
                got = store.evaluation(f"{worker}-{i}")
                assert got is not None
                assert [c.uuid for c in got.cards] == [f"{worker}-{i}-a", f"{worker}-{i}-b"]
    finally:
        store.close()


def test_closing_sqlite_storage_closes_the_writer_and_empties_the_log(tmp_path: Path) -> None:
    """close() gives back the connection evaluations are written on, so the last connection
    to close checkpoints the write-ahead log into the database file (and removes the log)."""
    path = tmp_path / "ivig-cds.db"
    store = Storage(f"sqlite:///{path}")
    store.record(_evaluation("one", ("c1",)))
    assert Path(f"{path}-wal").exists()
    store.close()
    assert not Path(f"{path}-wal").exists()
    again = Storage(f"sqlite:///{path}")
    try:
        assert again.evaluation("one") is not None
    finally:
        again.close()
