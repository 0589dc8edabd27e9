"""An index on finished_at, for /metrics reading the jobs finished since its last scrape.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_modelq_jobs_finished", "modelq_jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_modelq_jobs_finished", table_name="modelq_jobs")
