"""Alembic environment: always run by cds_service.storage.migrate with an open connection (no URL
here), so the same code upgrades SQLite and PostgreSQL, inside the caller's transaction and lock."""

from __future__ import annotations

from alembic import context

from cds_service.storage import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
