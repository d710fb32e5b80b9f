"""Alembic's entry point: migrations run on the connection `hanse.storage.schema` hands over."""

from __future__ import annotations

from alembic import context

from hanse.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters a table by copying it: batch mode does that for the operations that need it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
