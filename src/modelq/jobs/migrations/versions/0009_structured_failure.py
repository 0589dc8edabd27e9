"""A failed job keeps its error structured (failure: type, message, field, details) beside its text.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("modelq_jobs") as batch:
        batch.add_column(sa.Column("failure", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("modelq_jobs") as batch:
        batch.drop_column("failure")
