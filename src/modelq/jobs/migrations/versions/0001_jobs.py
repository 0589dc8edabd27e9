"""Create the job table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "modelq_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("runner", sa.String(16), nullable=False, server_default="worker"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("artifacts", sa.JSON(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=False, server_default=""),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_modelq_jobs_owner_idempotency"),
    )
    op.create_index("ix_modelq_jobs_status_queue_created", "modelq_jobs", ["status", "queue", "created_at"])
    op.create_index("ix_modelq_jobs_owner_created", "modelq_jobs", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_table("modelq_jobs")
