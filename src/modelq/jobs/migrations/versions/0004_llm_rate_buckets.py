"""The LLM endpoints' shared rate-limit buckets, when they live in the job store's database.

Before this revision the llm workload created the table itself; a database that has it keeps it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("modelq_llm_rate_buckets"):
        return
    op.create_table(
        "modelq_llm_rate_buckets",
        sa.Column("bucket", sa.String(200), primary_key=True),
        sa.Column("req", sa.Float(), nullable=False),
        sa.Column("tok", sa.Float(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("modelq_llm_rate_buckets")
