"""Alembic environment for the job store; run through modelq.jobs.store.migrate()."""

from alembic import context

from modelq.jobs.records import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
