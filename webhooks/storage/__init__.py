"""Durable storage: schema, engine, the inbox and migrations."""
