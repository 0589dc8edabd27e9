"""What each worker reads and holds, for placement across workers.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "modelq_model_consumers",
        sa.Column("worker", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(400), primary_key=True),
        sa.Column("reading", sa.Boolean(), nullable=False),
        sa.Column("chosen", sa.Boolean(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=True),
        sa.Column("serves", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("stranded", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("modelq_model_consumers")
