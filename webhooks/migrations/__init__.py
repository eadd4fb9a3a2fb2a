"""Alembic migrations for the inbox schema (identical on SQLite and PostgreSQL)."""
