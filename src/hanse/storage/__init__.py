"""Persistence: SQLAlchemy tables and the queries the gateway runs."""
