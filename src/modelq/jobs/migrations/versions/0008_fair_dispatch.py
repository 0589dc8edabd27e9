"""Fair share: a job may be held in the store until its turn (released_at), ordered by a fair tag.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("modelq_jobs") as batch:
        batch.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fair_tag", sa.Float(), nullable=True))
        batch.create_index("ix_modelq_jobs_dispatch", ["status", "queue", "released_at", "fair_tag"])
    # Every job recorded before had its message published when it was submitted.
    op.execute("UPDATE modelq_jobs SET released_at = created_at")
    op.create_table("modelq_dispatch_locks", sa.Column("key", sa.String(400), primary_key=True))


def downgrade() -> None:
    op.drop_table("modelq_dispatch_locks")
    with op.batch_alter_table("modelq_jobs") as batch:
        batch.drop_index("ix_modelq_jobs_dispatch")
        batch.drop_column("fair_tag")
        batch.drop_column("released_at")
