"""Shared JWT replay protection (jti_seen) and retention tombstones (expired_reports).

jti_seen: one row per accepted token (a hash of issuer and jti), kept until the token expires, so
a token replayed on any replica is refused. expired_reports: the ids of purged evaluations, so
their report link says "expired" instead of "not found".

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jti_seen",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_jti_seen_expires_at", "jti_seen", ["expires_at"])
    op.create_table(
        "expired_reports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expired_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("expired_reports")
    op.drop_table("jti_seen")
