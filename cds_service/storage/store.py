"""Durable storage: every evaluation's response (card uuids, coverage-assertion id, determination
snapshot, the report) and the feedback clinicians send about its cards.

One module, SQLAlchemy Core, one URL: ``sqlite:///path`` by default (``Settings.database_path``),
``postgresql+psycopg://…`` through ``DATABASE_URL`` (install a driver, e.g. ``psycopg[binary]``).
The schema is Alembic's (``migrate.py``, ``migrations/`` beside this module). Everything that
replicas must share lives here: evaluations (reports), feedback, and the JWT ``jti`` values seen.
A report is kept exactly as long as the feedback on its cards: ``purge`` deletes both together
once they are older than the retention period and leaves a tombstone, so the link says "expired".

Writes commit before the HTTP response is sent. With SQLite the two kinds of write are made durable
differently (``_durability``): feedback is synced to disk before its 200 (``synchronous=FULL``: it
survives a power loss); an evaluation record is committed to the write-ahead log without waiting for
the disk (``synchronous=NORMAL``: it survives a crash of the service process, and the database stays
consistent, but a power loss or OS crash may lose the last evaluations written before it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from cds_service.core.errors import BadRequest, NotFound
from cds_service.storage import migrate

log = logging.getLogger(__name__)

# how often one process deletes the jti rows of tokens that have expired
JTI_SWEEP_S = 60.0
# evaluations deleted per transaction by a purge (short transactions: answers keep flowing)
PURGE_BATCH = 500

# SQLite: how long the checkpointer lets written evaluations gather in the write-ahead log before it
# copies them into the database file (off the request path; see Storage._checkpoints)
CHECKPOINT_AFTER_S = 0.25

metadata = sa.MetaData()

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # report id (unguessable)
    sa.Column("created_at", sa.String(32), nullable=False, index=True),  # ISO 8601 UTC
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("hook", sa.String(32), nullable=False),
    sa.Column("hook_instance", sa.String(128), nullable=False),
    sa.Column("patient_id", sa.String(64), nullable=False),
    sa.Column("order_ref", sa.String(200), nullable=False),
    sa.Column("assertion_id", sa.String(64), nullable=False, unique=True),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("determination", sa.Text, nullable=False),  # the contract object, JSON
    sa.Column("response", sa.Text, nullable=False),  # the CDS Hooks response as sent, JSON
    # what the report's chart needs beyond the determination (report_facts module), JSON;
    # NULL for evaluations recorded before it existed (their report has no chart lines)
    sa.Column("report_facts", sa.Text, nullable=True),
)

cards = sa.Table(
    "cards",
    metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("evaluation_id", sa.ForeignKey("evaluations.id"), nullable=False, index=True),
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("card_type", sa.String(64), nullable=False),
    sa.Column("summary", sa.String(200), nullable=False),
    sa.Column("suggestions", sa.Text, nullable=False),  # JSON list of suggestion uuids
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.ForeignKey("cards.uuid"), nullable=False, index=True),
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("card_type", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # accepted | overridden
    sa.Column("override_system", sa.String(200)),
    sa.Column("override_code", sa.String(64)),
    sa.Column("override_display", sa.String(200)),
    sa.Column("user_comment", sa.Text),
    sa.Column("accepted_suggestions", sa.Text, nullable=False),  # JSON list of uuids
    sa.Column("outcome_timestamp", sa.String(40), nullable=False),
    sa.Column("received_at", sa.String(32), nullable=False, index=True),
)

# JWT replay protection shared by every replica: one row per accepted token until it expires
jti_seen = sa.Table(
    "jti_seen",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256(iss NUL jti), hex
    sa.Column("expires_at", sa.Float, nullable=False, index=True),  # epoch seconds
)

# ids of purged evaluations: their report link answers "expired" rather than "no such report"
expired_reports = sa.Table(
    "expired_reports",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("expired_at", sa.String(32), nullable=False),
)


def _evaluation_row(ev: Evaluation) -> dict[str, Any]:
    """The evaluations row of `ev` (JSON columns through orjson: the response is what app.py
    already serialises with it)."""
    return {
        "id": ev.id,
        "created_at": ev.created_at or utc_now(),
        "service_id": ev.service_id,
        "hook": ev.hook,
        "hook_instance": ev.hook_instance,
        "patient_id": ev.patient_id,
        "order_ref": ev.order_ref,
        "assertion_id": ev.assertion_id,
        "policy": ev.policy,
        "outcome": ev.outcome,
        "determination": _json(ev.determination),
        "response": _json(ev.response),
        "report_facts": None if ev.report_facts is None else _json(ev.report_facts),
    }


def _card_row(ev: Evaluation, card: CardRecord) -> dict[str, Any]:
    return {
        "uuid": card.uuid,
        "evaluation_id": ev.id,
        "service_id": ev.service_id,
        "card_type": card.card_type,
        "summary": card.summary[:200],
        "suggestions": _json(list(card.suggestions)),
    }


# the same INSERTs for the SQLite driver itself (Storage._record_sqlite), named parameters
_INSERT_EVALUATION = str(evaluations.insert().compile(dialect=sqlite_dialect(paramstyle="named")))
_INSERT_CARDS = str(cards.insert().compile(dialect=sqlite_dialect(paramstyle="named")))


def _json(value: Any) -> str:
    """A JSON column's text (read back with json.loads)."""
    return orjson.dumps(value).decode()


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class CardRecord:
    uuid: str
    card_type: str
    summary: str
    suggestions: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    """What is kept of one response: enough to answer feedback, rebuild the report, audit."""

    id: str
    service_id: str
    hook: str
    hook_instance: str
    patient_id: str
    order_ref: str
    assertion_id: str
    policy: str
    outcome: str
    determination: dict[str, Any]
    response: Mapping[str, Any]  # the CDS Hooks response as sent (hooks.models.Response)
    cards: tuple[CardRecord, ...]
    created_at: str = ""
    report_facts: dict[str, Any] | None = None


@dataclass(frozen=True)
class FeedbackItem:
    card: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    outcome_timestamp: str
    override_system: str | None = None
    override_code: str | None = None
    override_display: str | None = None
    user_comment: str | None = None


@dataclass(frozen=True)
class OverrideRate:
    card_type: str
    total: int
    overridden: int
    accepted: int

    @property
    def rate(self) -> float:
        return self.overridden / self.total if self.total else 0.0


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Storage:
    """The database. `migrate`: bring the schema to head now (under the migration lock);
    otherwise refuse to start on a schema that is not this code's (migrate.SchemaOutOfDate)."""

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True  # a PostgreSQL restart must not fail the next request
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine: Engine = sa.create_engine(url, future=True, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            if migrate_schema:
                migrate.upgrade(self.engine)
            else:
                migrate.check(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._next_sweep = 0.0
        self.checkpoints = 0  # background checkpoints run (SQLite)
        self._written = threading.Event()
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._lock = threading.Lock()
        # SQLite: the connection evaluation records are written on (Storage._record_sqlite)
        self._writer: PoolProxiedConnection | None = None
        self._writer_lock = threading.Lock()

    def close(self) -> None:
        self._closing.set()
        self._written.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()  # back to the pool, which dispose() closes
                self._writer = None
        self.engine.dispose()  # the last connection to close checkpoints what is left

    def _checkpoints(self) -> None:
        """SQLite: copy the write-ahead log into the database file in this thread, a little
        after writes, instead of in whichever request's commit crosses SQLite's threshold (with
        synchronous=NORMAL that commit would sync the whole log and the database file: a pause
        of several ms for ~2% of order-sign answers). PASSIVE: writers and readers go on."""
        while True:
            self._written.wait()
            if self._closing.wait(CHECKPOINT_AFTER_S):
                return
            self._written.clear()
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                self.checkpoints += 1
            except Exception as exc:  # the next one retries; SQLite also checkpoints on close
                log.warning("WAL checkpoint failed: %s", type(exc).__name__)

    def _wrote(self) -> None:
        if not self.is_sqlite:
            return
        if self._checkpointer is None:
            with self._lock:
                if self._checkpointer is None and not self._closing.is_set():
                    self._checkpointer = threading.Thread(
                        target=self._checkpoints, name="sqlite-checkpoint", daemon=True
                    )
                    self._checkpointer.start()
        self._written.set()

    # -- evaluations -------------------------------------------------------------------
    def record(self, ev: Evaluation) -> None:
        """Store one evaluation and its cards in one transaction, committed on return (the
        response that follows names cards that feedback must find)."""
        row = _evaluation_row(ev)
        card_rows = [_card_row(ev, c) for c in ev.cards]
        if self.is_sqlite:
            self._record_sqlite(row, card_rows)
        else:
            with self.engine.begin() as conn:
                # parameters at execution, not .values(): one cached compiled statement
                conn.execute(evaluations.insert(), row)
                if card_rows:
                    conn.execute(cards.insert(), card_rows)
        self._wrote()

    def _record_sqlite(self, row: dict[str, Any], card_rows: list[dict[str, Any]]) -> None:
        """SQLite: the statements on this process's own writer connection, through the driver.
        An SQLAlchemy transaction (pool checkout, statement cache look-ups, events, reset on
        return) cost about as much CPU as SQLite's own work; SQLite lets one writer at a time
        commit anyway, and the lock queues this process's writers without SQLite's busy-wait
        sleeps. Errors come out as SQLAlchemy's, like every other write's."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = self.engine.raw_connection()
            dbapi: Any = self._writer.driver_connection  # sqlite3.Connection
            try:
                # not synced before the answer: the EHR waits for it (see the module docstring)
                self._durability(dbapi, "NORMAL")
                dbapi.execute(_INSERT_EVALUATION, row)
                if card_rows:
                    dbapi.executemany(_INSERT_CARDS, card_rows)
                dbapi.commit()
            except BaseException as exc:
                # back to the pool, which rolls back (or discards a broken connection); the next
                # record checks out a connection afresh
                self._writer.close()
                self._writer = None
                if isinstance(exc, sqlite3.Error):
                    raise sa.exc.DBAPIError.instance(
                        None, None, exc, sqlite3.Error, hide_parameters=True
                    ) from exc
                raise

    def _durability(self, dbapi: Any, level: str) -> None:
        """SQLite's `synchronous` for this (driver) connection's next commit; WAL mode (set on
        connect) makes NORMAL durable across process crashes. Other databases keep their own
        setting."""
        if self.is_sqlite:
            dbapi.execute(f"PRAGMA synchronous={level}")

    def evaluation(self, report_id: str) -> Evaluation | None:
        return self._evaluation(evaluations.c.id == report_id)

    def by_assertion(self, assertion_id: str) -> Evaluation | None:
        return self._evaluation(evaluations.c.assertion_id == assertion_id)

    def _evaluation(self, where: Any) -> Evaluation | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(evaluations).where(where)).mappings().first()
            if row is None:
                return None
            rows = conn.execute(
                sa.select(cards).where(cards.c.evaluation_id == row["id"])
            ).mappings()
            recs = tuple(
                CardRecord(
                    r["uuid"], r["card_type"], r["summary"], tuple(json.loads(r["suggestions"]))
                )
                for r in rows
            )
        return Evaluation(
            id=row["id"],
            service_id=row["service_id"],
            hook=row["hook"],
            hook_instance=row["hook_instance"],
            patient_id=row["patient_id"],
            order_ref=row["order_ref"],
            assertion_id=row["assertion_id"],
            policy=row["policy"],
            outcome=row["outcome"],
            determination=json.loads(row["determination"]),
            response=json.loads(row["response"]),
            cards=recs,
            created_at=row["created_at"],
            report_facts=json.loads(row["report_facts"]) if row["report_facts"] else None,
        )

    def expired(self, report_id: str) -> bool:
        """Whether this report existed and was purged by retention."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(expired_reports.c.id).where(expired_reports.c.id == report_id)
            ).first()
        return found is not None

    def ping(self) -> None:
        """A round trip to the database (readiness); raises when it cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1))).scalar_one()

    # -- retention ---------------------------------------------------------------------
    def purge(self, older_than_days: float, now: dt.datetime | None = None) -> int:
        """Delete evaluations created more than `older_than_days` ago, with their cards and the
        feedback on them, leaving a tombstone per report; the number purged. Safe to run on
        several replicas at once: a row is deleted (and tombstoned) by one transaction only."""
        cutoff = _stamp((now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=older_than_days))
        purged = 0
        while True:
            with self.engine.begin() as conn:
                ids = list(
                    conn.execute(
                        sa.select(evaluations.c.id)
                        .where(evaluations.c.created_at < cutoff)
                        .order_by(evaluations.c.created_at)
                        .limit(PURGE_BATCH)
                    ).scalars()
                )
                if not ids:
                    return purged
                card_ids = sa.select(cards.c.uuid).where(cards.c.evaluation_id.in_(ids))
                conn.execute(feedback.delete().where(feedback.c.card_uuid.in_(card_ids)))
                conn.execute(cards.delete().where(cards.c.evaluation_id.in_(ids)))
                gone = conn.execute(
                    evaluations.delete()
                    .where(evaluations.c.id.in_(ids))
                    .returning(evaluations.c.id, evaluations.c.created_at)
                ).all()
                if gone:
                    stamp = utc_now()
                    conn.execute(
                        expired_reports.insert(),
                        [{"id": i, "created_at": c, "expired_at": stamp} for i, c in gone],
                    )
                purged += len(gone)
            self._wrote()

    # -- JWT replay protection ---------------------------------------------------------
    def first_use(self, issuer: str, jti: str, until: float) -> bool:
        """Record (issuer, jti) until `until` (epoch seconds); False when any replica already
        did: the primary key makes the second insert fail, whichever process makes it."""
        key = hashlib.sha256(f"{issuer}\0{jti}".encode()).hexdigest()
        now = time.time()
        try:
            with self.engine.begin() as conn:
                self._durability(conn.connection.driver_connection, "NORMAL")
                if now >= self._next_sweep:
                    self._next_sweep = now + JTI_SWEEP_S
                    conn.execute(jti_seen.delete().where(jti_seen.c.expires_at < now))
                conn.execute(jti_seen.insert(), {"key": key, "expires_at": until})
        except sa.exc.IntegrityError:
            return False
        self._wrote()
        return True

    # -- feedback ----------------------------------------------------------------------
    def add_feedback(self, service_id: str, items: Iterable[FeedbackItem]) -> int:
        """Store all items in one transaction; unknown card -> NotFound, bad suggestion -> 400."""
        items = list(items)
        received = utc_now()
        with self.engine.begin() as conn:
            # on disk before the 200 (a FULL commit also syncs every earlier NORMAL commit in the
            # log, so stored feedback never points at an evaluation a power loss could take)
            self._durability(conn.connection.driver_connection, "FULL")
            rows = []
            for i, item in enumerate(items):
                card = (
                    conn.execute(
                        sa.select(cards.c.card_type, cards.c.suggestions).where(
                            cards.c.uuid == item.card, cards.c.service_id == service_id
                        )
                    )
                    .mappings()
                    .first()
                )
                if card is None:
                    raise NotFound(
                        f"feedback[{i}].card: no card {item.card!r} was returned by {service_id!r}"
                    )
                known = set(json.loads(card["suggestions"]))
                for j, sid in enumerate(item.accepted_suggestions):
                    if sid not in known:
                        raise BadRequest(
                            f"feedback[{i}].acceptedSuggestions[{j}].id",
                            f"{sid!r} is not a suggestion of card {item.card!r}",
                        )
                rows.append(
                    {
                        "card_uuid": item.card,
                        "service_id": service_id,
                        "card_type": card["card_type"],
                        "outcome": item.outcome,
                        "override_system": item.override_system,
                        "override_code": item.override_code,
                        "override_display": item.override_display,
                        "user_comment": item.user_comment,
                        "accepted_suggestions": json.dumps(list(item.accepted_suggestions)),
                        "outcome_timestamp": item.outcome_timestamp,
                        "received_at": received,
                    }
                )
            if rows:
                conn.execute(feedback.insert(), rows)
        self._wrote()
        return len(rows)

    def feedback_for(self, card_uuids: Iterable[str]) -> list[dict[str, Any]]:
        uuids = list(card_uuids)
        if not uuids:
            return []
        with self.engine.connect() as conn:
            result = conn.execute(
                sa.select(feedback).where(feedback.c.card_uuid.in_(uuids)).order_by(feedback.c.id)
            ).mappings()
            return [dict(r) for r in result]

    def override_rates(self, since: dt.datetime | None = None) -> list[OverrideRate]:
        """Per card type: feedback count, overridden and accepted (received since `since`)."""
        overridden = sa.func.sum(sa.case((feedback.c.outcome == "overridden", 1), else_=0))
        accepted = sa.func.sum(sa.case((feedback.c.outcome == "accepted", 1), else_=0))
        query = sa.select(
            feedback.c.card_type, sa.func.count().label("total"), overridden, accepted
        ).group_by(feedback.c.card_type)
        if since is not None:
            query = query.where(feedback.c.received_at >= _stamp(since))
        with self.engine.connect() as conn:
            return [
                OverrideRate(str(t), int(n), int(o or 0), int(a or 0))
                for t, n, o, a in conn.execute(query.order_by(feedback.c.card_type))
            ]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    # the default for every write; Storage._durability chooses per write (evaluation records:
    # NORMAL, durable across process crashes; feedback: FULL, durable across power loss)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA wal_autocheckpoint=0")  # Storage._checkpoints does it, off the request path
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
