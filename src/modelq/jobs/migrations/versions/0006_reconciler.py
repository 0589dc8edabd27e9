"""The reconciler: its cluster-wide lease, what it finds per queue, and republishes per job.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("modelq_jobs") as batch:
        batch.add_column(sa.Column("republished", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "modelq_leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "modelq_queue_reports",
        sa.Column("queue", sa.String(400), primary_key=True),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=True),
        sa.Column("readers", sa.Text(), nullable=False, server_default=""),
        sa.Column("stranded", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("modelq_queue_reports")
    op.drop_table("modelq_leases")
    with op.batch_alter_table("modelq_jobs") as batch:
        batch.drop_column("republished")
