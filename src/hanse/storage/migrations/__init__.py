"""Alembic migrations of the schema in `hanse.storage.tables`; run them with `hanse db upgrade`."""
