"""Evaluations, feedback, the client JWT replay cache and retention (store.py) on SQLite or
PostgreSQL; the schema's Alembic migrations (migrate.py, migrations/)."""

from cds_service.storage.store import (
    CardRecord,
    Evaluation,
    FeedbackItem,
    Storage,
    cards,
    evaluations,
    jti_seen,
    metadata,
)

__all__ = [
    "CardRecord",
    "Evaluation",
    "FeedbackItem",
    "Storage",
    "cards",
    "evaluations",
    "jti_seen",
    "metadata",
]
