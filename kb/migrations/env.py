"""Alembic's entry point, run by kb/migrations/__init__.py on the catalogue's own connection."""

from alembic import context

from kb.migrations import VERSION_TABLE

context.configure(connection=context.config.attributes["connection"], version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
