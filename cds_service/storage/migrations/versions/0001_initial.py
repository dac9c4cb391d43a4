"""The schema as `create_all` made it before migrations existed (evaluations, cards, feedback).

A database created that way has these tables and no alembic_version: cds_service.storage.migrate
stamps it at this revision instead of creating them again.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("hook", sa.String(32), nullable=False),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("order_ref", sa.String(200), nullable=False),
        sa.Column("assertion_id", sa.String(64), nullable=False, unique=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("determination", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
    )
    op.create_index("ix_evaluations_created_at", "evaluations", ["created_at"])
    op.create_table(
        "cards",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("evaluation_id", sa.String(64), sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("card_type", sa.String(64), nullable=False),
        sa.Column("summary", sa.String(200), nullable=False),
        sa.Column("suggestions", sa.Text, nullable=False),
    )
    op.create_index("ix_cards_evaluation_id", "cards", ["evaluation_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("card_type", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("override_system", sa.String(200)),
        sa.Column("override_code", sa.String(64)),
        sa.Column("override_display", sa.String(200)),
        sa.Column("user_comment", sa.Text),
        sa.Column("accepted_suggestions", sa.Text, nullable=False),
        sa.Column("outcome_timestamp", sa.String(40), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_received_at", "feedback", ["received_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("cards")
    op.drop_table("evaluations")
