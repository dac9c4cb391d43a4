"""The report's chart facts per evaluation (threshold, limit for age, therapy start, troughs,
IG records, weights), stored with it so the report never re-evaluates. Nullable: evaluations
written before it keep a report without the chart's reference lines.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database stamped at the baseline may already have it (made by create_all from a later
    # table definition): adding it twice would stop start-up
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("evaluations")}
    if "report_facts" not in columns:
        op.add_column("evaluations", sa.Column("report_facts", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("evaluations", "report_facts")
