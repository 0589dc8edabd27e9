"""Per-worker model residency figures.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "modelq_model_residency",
        sa.Column("worker", sa.String(200), primary_key=True),
        sa.Column("pid", sa.Integer(), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("resident", sa.Boolean(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("loads", sa.Integer(), nullable=False),
        sa.Column("evictions", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("load_seconds", sa.Float(), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("modelq_model_residency")
